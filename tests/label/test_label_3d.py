"""The MONAI Label app on volumes (``--conf dimension 3``), in process: the app's info reports dimension 3, the
infer task segments a NIfTI volume by the 3D network (mask of the volume's shape, written with its affine, equal to
a plain forward pass of the model), refuses clicks and 2D images, and the train task trains two iterations with the
bundle's 3D override on the datastore's volumes."""

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
monailabel = pytest.importorskip(
    "monailabel", reason="MONAI Label is an optional extra: install it with `make label` to run the app's tests"
)

from fastapi import HTTPException  # noqa: E402

from dsp_monai.label.datastore import DSPDatastore  # noqa: E402
from dsp_monai.label.infer import DSPInferTask  # noqa: E402
from dsp_monai.label.settings import AppSettings  # noqa: E402
from dsp_monai.label.train import DSPTrainTask  # noqa: E402

nib = pytest.importorskip("nibabel")

CLASSES = ["background", "bright", "grey"]
SHAPE = (16, 32, 32)  # z, y, x: one sliding window covers the volume, so a plain forward pass is the reference
OVERRIDES = {
    "sizes#cpu#features": [4, 4, 8, 8, 16, 4],
    "sizes#cpu#embedding_dim": 8,
    "sizes#cpu#batch_size": 2,
    "sizes#cpu#iterations_per_epoch": 2,
    "sizes#cpu#warmup_iterations": 0,
    "sizes#cpu#cutout_size": 4,
    "roi_size": list(SHAPE),
}
CONF = {"dimension": "3", "labels": ",".join(CLASSES), "overrides": json.dumps(OVERRIDES), "val_split": "0.5"}


def volume(seed):
    """A (16, 32, 32) uint8-valued volume and its mask: a bright block and a grey block on a dark background."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:9, 4:14, 18:30] = 1
    mask[9:15, 18:29, 3:12] = 2
    image = np.choose(mask, [40, 200, 120]).astype(np.float64) + rng.normal(0, 6, SHAPE)
    return np.clip(image, 0, 255).astype(np.float32), mask


def affine():
    """Anisotropic, one axis flipped, with an offset: a writer that drops or rebuilds the affine changes it."""
    matrix = np.diag([-0.7, 0.5, 2.0, 1.0])
    matrix[:3, 3] = [11.0, -23.5, 4.25]
    return matrix


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(settings, seed model path, folder of the NIfTI volumes and masks) with a random-weight model published."""
    tmp = tmp_path_factory.mktemp("label3d")
    settings = AppSettings.from_conf(str(tmp / "app"), CONF)
    torch.manual_seed(0)
    network = settings.bundle().network()
    (tmp / "app" / "model").mkdir(parents=True)
    torch.save(network.state_dict(), settings.model_path)
    files = tmp / "files"
    files.mkdir()
    for seed in range(2):
        image, mask = volume(seed)
        nib.save(nib.Nifti1Image(image, affine()), str(files / f"vol{seed}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine()), str(files / f"vol{seed}_mask.nii.gz"))
    return settings, files


def reference_mask(settings, image):
    """Class ids of ``image`` (z, y, x) by the published model: plain 3D forward pass, intensities / 255."""
    network = settings.bundle().network()
    network.load_state_dict(torch.load(settings.model_path, map_location="cpu"))
    network.eval()
    with torch.no_grad():
        logits = network(torch.as_tensor(image, dtype=torch.float32)[None, None] / 255.0)
    return logits[0].argmax(0).numpy().astype(np.uint8)


def test_settings_select_the_3d_override(app):
    settings, _ = app
    assert [path.rsplit("/", 2)[-2:] for path in settings.config_files] == [["configs", "train.yaml"],
                                                                            ["configs", "train_3d.yaml"]]
    assert settings.bundle().get("spatial_dims") == 3
    assert AppSettings.from_conf(settings.app_dir, {}).config_files == settings.config_files[:1]


def test_app_info_reports_dimension_3(app, tmp_path):
    from dsp_monai.label.app import DSPLabelApp

    settings, _ = app
    label_app = DSPLabelApp(settings.app_dir, str(tmp_path / "studies"), CONF)
    assert label_app.info()["models"]["dsp"]["dimension"] == 3
    assert label_app.datastore().spatial_dims == 3
    network = label_app._infers["dsp"].network
    assert {w.dim() for n, w in network.state_dict().items() if n.endswith("conv.weight")} == {5}
    assert DSPInferTask(AppSettings.from_conf(settings.app_dir, {})).info()["dimension"] == 2


def test_infer_segments_a_nifti_volume_with_its_affine(app):
    settings, files = app
    source = nib.load(str(files / "vol0.nii.gz"))
    path, result = DSPInferTask(settings)({"image": str(files / "vol0.nii.gz"), "image_id": "vol0"})
    assert path.endswith(".nii.gz") and result["shape"] == list(SHAPE)
    written = nib.load(path)
    assert written.shape == source.shape == SHAPE
    np.testing.assert_array_equal(written.affine, source.affine)
    labels = np.asarray(written.dataobj)
    expected = reference_mask(settings, np.asarray(source.dataobj))
    assert len(np.unique(expected)) > 1
    assert not np.array_equal(expected, expected[::-1]) and not np.array_equal(expected, expected[:, :, ::-1])
    assert np.mean(labels == expected) > 0.999


@pytest.mark.parametrize("params, field", [
    ({"foreground": [[3, 4, 5]], "label": "bright"}, "foreground"),
    ({"refine": "true", "background": [[1, 2, 3]]}, "background"),
    ({"keep_clicks": True}, "keep_clicks"),
])
def test_clicks_on_a_volume_are_refused_naming_the_image(app, params, field):
    settings, files = app
    with pytest.raises(HTTPException, match=rf"request field '{field}': image 'vol0' is a volume of shape "
                                            r"\[16, 32, 32\]; clicks and click refinement work on 2D images only") as e:
        DSPInferTask(settings)({"image": str(files / "vol0.nii.gz"), "image_id": "vol0", **params})
    assert e.value.status_code == 400


def test_a_2d_image_in_the_3d_app_is_refused(app, tmp_path):
    from PIL import Image

    settings, _ = app
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(HTTPException, match=r"image 'flat': an array of shape \[32, 32\] \(2 axes\); the app "
                                            r"segments single-channel 3D volumes \(z, y, x\)") as e:
        DSPInferTask(settings)({"image": str(tmp_path / "flat.png"), "image_id": "flat"})
    assert e.value.status_code == 400


def test_train_task_trains_two_iterations_on_the_datastore_volumes(app, tmp_path):
    settings, files = app
    bundle = settings.bundle()
    datastore = DSPDatastore(str(tmp_path / "studies"), CLASSES, bundle.preprocessing(), spatial_dims=3,
                             extensions=["*.nii.gz"], auto_reload=False)
    for seed in range(2):
        datastore.add_image(f"vol{seed}", str(files / f"vol{seed}.nii.gz"), {})
        datastore.save_label(f"vol{seed}", str(files / f"vol{seed}_mask.nii.gz"), "final", {})
    before = torch.load(settings.model_path, map_location="cpu")
    stats = DSPTrainTask(settings)({"max_epochs": 1, "pretrained": False}, datastore)
    assert stats["training_items"] == {"mask": 1} and stats["validation_items"] == 1
    metrics = json.loads(open(f"{stats['run_dir']}/metrics.json").read())
    assert metrics["finished"] and metrics["iterations"] == 2
    after = torch.load(settings.model_path, map_location="cpu")
    convs = [name for name, weight in after.items() if name.endswith("conv.weight")]
    assert convs and all(after[name].dim() == 5 for name in convs)
    assert any(not torch.equal(before[name], after[name]) for name in convs)


def test_the_volume_datastore_checks_3d_weak_annotations(app, tmp_path):
    settings, files = app
    datastore = DSPDatastore(str(tmp_path / "studies"), CLASSES, settings.bundle().preprocessing(), spatial_dims=3,
                             extensions=["*.nii.gz"], auto_reload=False)
    datastore.add_image("vol0", str(files / "vol0.nii.gz"), {})
    weak = {"boxes": [[2, 4, 18, 9, 14, 30]], "box_classes": [1], "boxes_exhaustive": False,
            "points": [[12, 20, 7]], "point_classes": [2]}
    datastore.update_image_info("vol0", {"dsp_annotations": weak})
    assert datastore.get_image_info("vol0")["dsp_annotations"] == weak
    with pytest.raises(HTTPException, match=r"image 'vol0', info key 'dsp_annotations': image 0: points\[0\] = "
                                            r"\(3, 4, 40\) lies outside the image of shape \[16, 32, 32\]"):
        datastore.update_image_info("vol0", {"dsp_annotations": {"points": [[3, 4, 40]], "point_classes": [2]}})
    with pytest.raises(HTTPException, match=r"upload 'flat': an array of shape \[32, 32\] \(2 axes\)"):
        from PIL import Image

        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "flat.png")
        datastore.add_image("flat", str(tmp_path / "flat.png"), {})
