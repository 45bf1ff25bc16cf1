"""The MONAI Label app through a real server on 127.0.0.1: upload, infer (shape, orientation, values), final mask,
tags and points through the REST API, a 1-epoch training from them, infer again, and the bad requests.

The server runs as ``python -m dsp_monai.label start_server`` in a temporary studies folder, with a random-weight
model of the bundle's network (tiny sizes) published by ``--model``; the expected masks are computed here with
plain torch on the (row, col) arrays, so a transposed, cropped or stale answer differs from them.
"""

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
monailabel = pytest.importorskip(
    "monailabel", reason="MONAI Label is an optional extra: install it with `make label` to run the app's tests"
)
httpx = pytest.importorskip("httpx", reason="installed with the MONAI Label extra (`make label`)")
psutil = pytest.importorskip("psutil", reason="installed with the MONAI Label extra (`make label`)")

from PIL import Image  # noqa: E402

from dsp_monai.label.settings import AppSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["background", "bright", "grey"]
ROWS, COLS = 96, 128
# Tiny network, one window covering the whole 96 x 128 image (so the reference needs no sliding window), and a
# training of two iterations.
OVERRIDES = {
    "sizes#cpu#features": [4, 4, 8, 8, 16, 4],
    "sizes#cpu#embedding_dim": 8,
    "sizes#cpu#batch_size": 2,
    "sizes#cpu#iterations_per_epoch": 2,
    "sizes#cpu#warmup_iterations": 0,
    "sizes#cpu#learning_rate": 0.01,
    "roi_size": [ROWS, COLS],
    "views#cutout_count": 1,
}
CONF = {"labels": ",".join(CLASSES), "overrides": json.dumps(OVERRIDES)}
START_TIMEOUT = 60
BUNDLE_DATA = ROOT / "bundle" / "data"
TRAIN_TIMEOUT = 300


def scene(seed):
    """A 96 x 128 image (uint8) and its mask: a bright rectangle in the top right, a grey disk lower left."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[8:40, 70:120] = 1
    rows, cols = np.mgrid[:ROWS, :COLS]
    mask[(rows - 66) ** 2 + (cols - 30) ** 2 < 16**2] = 2
    image = np.choose(mask, [40, 200, 120]).astype(np.float64) + rng.normal(0, 6, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def reference_mask(model_path, image):
    """Class ids of ``image`` (rows, cols) by the model at ``model_path``: plain forward pass, intensities / 255."""
    network = AppSettings.from_conf("/unused", CONF).bundle().network()
    state = torch.load(model_path, map_location="cpu")
    network.load_state_dict(state.get("model", state))
    network.eval()
    with torch.no_grad():
        logits = network(torch.as_tensor(image, dtype=torch.float32)[None, None] / 255.0)
    return logits[0].argmax(0).numpy().astype(np.uint8)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(client, app folder, seed model path, server log, whether bundle/data existed before the server started) of a
    running server; stopped by its process id afterwards."""
    tmp = tmp_path_factory.mktemp("label")
    seed_model = tmp / "seed_model.pt"
    torch.manual_seed(0)
    network = AppSettings.from_conf(str(tmp / "app"), CONF).bundle().network()
    torch.save(network.state_dict(), seed_model)
    port = free_port()
    bundle_data_existed = BUNDLE_DATA.exists()
    command = [sys.executable, "-m", "dsp_monai.label", "start_server", "--studies", str(tmp / "studies"),
               "--app", str(tmp / "app"), "--host", "127.0.0.1", "--port", str(port), "--model", str(seed_model)]
    for key, value in CONF.items():
        command += ["--conf", key, value]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MONAI_LABEL_TRACKING_ENABLED="false", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited ({process.returncode}):\n{(tmp / 'server.log').read_text()[-5000:]}")
            try:
                if client.get("/info/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/info/ did not answer within {START_TIMEOUT} s:\n"
                                     f"{(tmp / 'server.log').read_text()[-5000:]}")
            time.sleep(0.5)
        yield client, tmp / "app", seed_model, tmp / "server.log", bundle_data_existed
    finally:
        client.close()
        if process.poll() is None:
            children = psutil.Process(process.pid).children(recursive=True)
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for child in children:
                if child.is_running():
                    child.kill()
        log.close()


def upload(client, image_id, data, name):
    return client.put("/datastore/image", params={"image": image_id}, files={"file": (name, data)})


def infer(client, image_id, params=None):
    response = client.post("/infer/dsp", params={"image": image_id, "output": "image"},
                           data={"params": json.dumps(params or {})})
    return response


def decode(response):
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def put_info(client, image_id, info):
    return client.put("/datastore/image/info", params={"image": image_id}, data={"info": info})


def wait_for_training(client):
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while time.monotonic() < deadline:
        status = client.get("/train/").json()
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(1)
    raise AssertionError(f"training did not finish within {TRAIN_TIMEOUT} s")


def test_sequence(server):
    client, app_dir, seed_model, server_log, bundle_data_existed = server
    images = {name: scene(seed) for seed, name in enumerate(["cells_a", "cells_b", "cells_c"])}
    for image_id, (image, _) in images.items():
        response = upload(client, image_id, png_bytes(image), f"{image_id}.png")
        assert response.status_code == 200, response.text
    assert set(client.get("/datastore/", params={"output": "all"}).json()["objects"]) == set(images)
    info = client.get("/info/").json()
    assert info["labels"] == {name: index for index, name in enumerate(CLASSES)} and "dsp" in info["models"] and "dsp" in info["trainers"]

    # infer: shape, orientation and values against the model's mask of the (row, col) array
    image_a, mask_a = images["cells_a"]
    expected = reference_mask(seed_model, image_a)
    assert len(np.unique(expected)) > 1
    assert not np.array_equal(expected, expected[::-1]) and not np.array_equal(expected, expected[:, ::-1])
    label = decode(infer(client, "cells_a"))
    assert label.shape == (ROWS, COLS) and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) <= {0, 1, 2}
    assert np.mean(label == expected) > 0.999

    # a final mask on a, tags on b, points on c (and one more point from a kept click)
    response = client.put("/datastore/label", params={"image": "cells_a", "tag": "final"},
                          files={"label": ("cells_a.png", png_bytes(mask_a))})
    assert response.status_code == 200, response.text
    assert put_info(client, "cells_b", json.dumps({"dsp_annotations": {"tags": [0, 1, 2]}})).status_code == 200
    points = {"points": [[20, 90], [66, 30]], "point_classes": [1, 2]}
    assert put_info(client, "cells_c", json.dumps({"dsp_annotations": points})).status_code == 200
    label = decode(infer(client, "cells_c", {"foreground": [[100, 25]], "label": "bright", "keep_clicks": True}))
    assert label.shape == (ROWS, COLS)
    kept = client.get("/datastore/image/info", params={"image": "cells_c"}).json()["dsp_annotations"]
    assert kept == {"points": [[20, 90], [66, 30], [25, 100]], "point_classes": [1, 2, 1]}
    assert client.get("/datastore/image/info", params={"image": "cells_b"}).json()["dsp_annotations"] == {
        "tags": [0, 1, 2]}

    # refinement: a copy of the head fitted to clicks puts the clicked classes at the clicked pixels
    clicks = {"foreground": [[95, 20], [100, 30]], "background": [[5, 5], [64, 90]], "label": "bright",
              "refine": True, "refine_time_limit": 30}
    refined = decode(infer(client, "cells_a", clicks))
    assert [int(refined[y, x]) for x, y in clicks["foreground"]] == [1, 1]
    assert [int(refined[y, x]) for x, y in clicks["background"]] == [0, 0]

    # one epoch of training, a second request refused while it runs
    before = seed_model.read_bytes()
    response = client.post("/train/dsp", json={"max_epochs": 1})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while client.get("/train/", params={"check_if_running": True}).status_code != 200:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    second = client.post("/train/dsp", json={"max_epochs": 1})
    assert second.status_code == 429 and "Already Running" in second.json()["detail"]
    status = wait_for_training(client)
    assert status["status"] == "DONE", "\n".join(status.get("details", [])) + server_log.read_text()[-3000:]

    stats = json.loads((app_dir / "model" / "train_stats.json").read_text())
    datalist = json.loads(Path(stats["datalist"]).read_text())
    assert datalist["class_names"] == CLASSES
    types = {item["id"]: item["annotation_type"] for item in datalist["training"]}
    assert types == {"cells_a": "mask", "cells_b": "tags", "cells_c": "points"}
    by_id = {item["id"]: item for item in datalist["training"]}
    assert by_id["cells_b"]["tags"] == [0, 1, 2] and by_id["cells_c"]["point_classes"] == [1, 2, 1]
    assert len(datalist["validation"]) == 1
    assert datalist["validation"][0]["label"].endswith(os.path.join("labels", "final", "cells_a.png"))
    model = app_dir / "model" / "model.pt"
    assert model.read_bytes() != before
    assert not list(Path(stats["run_dir"]).glob("synthetic*")), "training generated synthetic data"
    assert BUNDLE_DATA.exists() == bundle_data_existed, "the server generated synthetic data"
    assert client.get("/info/").json()["train_stats"]["dsp"]["training_items"] == {"mask": 1, "tags": 1, "points": 1}

    # infer again: the server reads the new model (whose mask differs from the seed model's)
    retrained = reference_mask(model, image_a)
    assert not np.array_equal(retrained, expected)
    label = decode(infer(client, "cells_a"))
    assert np.mean(label == retrained) > 0.999


def test_nifti_and_tiff_images(server, tmp_path):
    """A 2D NIfTI image gets a NIfTI label with its affine, a TIFF image a PNG label; both in array order."""
    import nibabel as nib
    import tifffile

    client, app_dir, _, _, _ = server
    image, _ = scene(3)
    expected = reference_mask(app_dir / "model" / "model.pt", image)
    affine = np.diag([0.5, 0.25, 1.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "slice.nii.gz")
    response = upload(client, "slice_nii", (tmp_path / "slice.nii.gz").read_bytes(), "slice_nii.nii.gz")
    assert response.status_code == 200, response.text
    response = infer(client, "slice_nii")
    assert response.status_code == 200, response.text
    (tmp_path / "label.nii.gz").write_bytes(response.content)
    label = nib.load(tmp_path / "label.nii.gz")
    assert label.shape == (ROWS, COLS) and label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(label.affine, affine)
    assert np.mean(np.asarray(label.dataobj) == expected) > 0.999

    tifffile.imwrite(tmp_path / "slice.tif", image)
    response = upload(client, "slice_tif", (tmp_path / "slice.tif").read_bytes(), "slice_tif.tif")
    assert response.status_code == 200, response.text
    response = infer(client, "slice_tif")
    assert response.headers["content-type"] == "image/png"
    label = decode(response)
    assert label.shape == (ROWS, COLS) and np.mean(label == expected) > 0.999


def test_bad_requests(server, tmp_path):
    client, _, _, _, _ = server
    image, mask = scene(7)
    assert upload(client, "bad_base", png_bytes(image), "bad_base.png").status_code == 200

    response = client.post("/infer/nosuchmodel", params={"image": "bad_base"})
    assert response.status_code == 404 and "unknown model 'nosuchmodel'" in response.json()["detail"]
    response = client.post("/infer/dsp", params={"image": "nosuchimage"})
    assert response.status_code == 404 and "nosuchimage" in response.json()["detail"]

    response = upload(client, "notes", b"these are not pixels", "notes.png")
    assert response.status_code == 415 and "cannot be read as an image" in response.json()["detail"]
    response = upload(client, "rgb", png_bytes(np.zeros((20, 30, 3), np.uint8)), "rgb.png")
    assert response.status_code == 400 and "single-channel 2D" in response.json()["detail"]
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((10, 12, 4), np.uint8), np.eye(4)), tmp_path / "volume.nii.gz")
    response = upload(client, "volume", (tmp_path / "volume.nii.gz").read_bytes(), "volume.nii.gz")
    assert response.status_code == 400 and "shape [10, 12, 4] (3 axes)" in response.json()["detail"]
    response = upload(client, "table", b"a,b\n1,2\n", "table.csv")
    assert response.status_code == 415 and "unsupported file type '.csv'" in response.json()["detail"]

    response = put_info(client, "bad_base", '{"dsp_annotations": {"tags": [0, 1]')
    assert response.status_code == 400 and "malformed JSON" in response.json()["detail"]
    response = put_info(client, "bad_base", json.dumps({"dsp_annotations": {"points": [[3, 4]], "point_classes": [1, 2]}}))
    assert response.status_code == 400 and "key 'point_classes'" in response.json()["detail"]
    response = put_info(client, "bad_base", json.dumps({"dsp_annotations": {"tags": [5]}}))
    assert response.status_code == 400 and "key 'tags'" in response.json()["detail"]
    response = put_info(client, "bad_base", json.dumps({"dsp_annotations": {"point": [[3, 4]]}}))
    assert response.status_code == 400 and "key 'point'" in response.json()["detail"]
    response = put_info(client, "bad_base", json.dumps({"dsp_annotations": {"points": [[ROWS, 4]],
                                                                            "point_classes": [1]}}))
    assert response.status_code == 400 and "outside the image" in response.json()["detail"]

    response = client.put("/datastore/label", params={"image": "bad_base", "tag": "final"},
                          files={"label": ("bad_base.png", png_bytes(mask[:, :64]))})
    assert response.status_code == 400 and "has shape [96, 64]" in response.json()["detail"]
    response = infer(client, "bad_base", {"foreground": [[COLS, 0]], "label": "bright"})
    assert response.status_code == 400 and "'foreground'" in response.json()["detail"]
    response = infer(client, "bad_base", {"foreground": [[3, 4]]})
    assert response.status_code == 400 and "'label'" in response.json()["detail"]
    response = infer(client, "bad_base", {"foreground": [[3, 4]], "label": 1, "refine": True, "refine_steps": "many"})
    assert response.status_code == 400 and "'refine_steps' (integer)" in response.json()["detail"]
    response = client.post("/infer/dsp", params={"image": "bad_base"}, data={"params": "{not json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["detail"]

    # the server still serves
    assert client.get("/info/").status_code == 200
    assert decode(infer(client, "bad_base")).shape == (ROWS, COLS)
