"""The study runner on a tiny real study (U-Net and DSP, 4 iterations of a tiny network, through the bundle CLI):
resume, the DSP snapshots, and the builders of Figures 4 and 5 (benchmarks/study_figures.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmark_modules import load_benchmark

TINY = """roi_size: [64, 64]
sizes#cpu#features: [4, 4, 8, 8, 16, 4]
sizes#cpu#embedding_dim: 8
batch_size: 4
iterations_per_epoch: 2
max_epochs: 2
val_interval: 1
num_workers: 0
warmup_iterations: 2
"""


def _module(name):
    return load_benchmark(name)


@pytest.fixture(scope="module")
def bench():
    return _module("bench_accuracy")


@pytest.fixture(scope="module")
def figures():
    return _module("study_figures")


@pytest.fixture(scope="module")
def study(bench, tmp_path_factory):
    """A finished tiny study: unet and dsp, mixed scenario, ACR 2, seed 0; returns (argv, root)."""
    out = tmp_path_factory.mktemp("study")
    subprocess.run([sys.executable, "-m", "dsp_monai.data.synthetic", "--out", str(out / "data"), "--cells", "2",
                    "--crops-per-cell", "3", "--crop-shape", "4", "64", "64", "--no-contact-sheet", "--quiet",
                    "--overwrite"], check=True, capture_output=True)
    (out / "tiny.yaml").write_text(TINY)
    argv = ["--root", str(out / "runs"), "--config", str(out / "tiny.yaml"), "--set",
            f"datalist={out / 'data' / 'datalist.json'}", "--methods", "unet", "dsp", "--acrs", "2", "--seeds", "0",
            "--no-write"]
    assert bench.main(argv) == 0
    return argv, out / "runs"


def _folder(bench, root, method):
    return bench.run_dir(root, "default", "mixed", method, 2, 0)


def test_a_finished_study_is_not_trained_again(bench, study, monkeypatch, capsys):
    argv, root = study
    monkeypatch.setattr(bench, "_call", lambda *a: pytest.fail("a finished run must not be run again"))
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("(done before") == 2


def test_a_half_written_evaluation_is_redone_and_gives_the_same_result(bench, study, monkeypatch):
    argv, root = study
    folder = _folder(bench, root, "unet")
    before = json.loads((folder / "test_metrics.json").read_text())
    (folder / "test_metrics.json").write_text('{"dice": ')
    calls, call = [], bench._call
    monkeypatch.setattr(bench, "_call", lambda args, log: (calls.append(args[4]), call(args, log)))
    assert bench.main(argv) == 0
    assert calls == ["evaluating"]
    assert json.loads((folder / "test_metrics.json").read_text())["dice"] == before["dice"]


def test_dsp_snapshots_at_10_50_100_percent_and_the_last_is_the_final_network(bench, study, figures):
    _, root = study
    folder = _folder(bench, root, "dsp")
    found = figures.snapshots(folder)
    assert [iteration for iteration, _ in found] == [1, 2, 4]  # 4 iterations: max(1, 4 // 10), 4 // 2, 4
    final = torch.load(folder / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)["network"]
    last = torch.load(found[-1][1], weights_only=True)
    first = torch.load(found[0][1], weights_only=True)
    assert set(last) == set(final)
    assert all(torch.equal(last[name], final[name]) for name in final)
    assert not torch.equal(first["head.prototypes"], last["head.prototypes"])
    assert not (_folder(bench, root, "unet") / "snapshots").exists()


def _dice_reference(labels, predictions, num_classes):
    """Mean over classes of the per-image Dice averaged over the images where the class is present (float64)."""
    per_class = []
    for index in range(num_classes):
        values = []
        for label, prediction in zip(labels, predictions):
            known = label != 255
            truth, guess = (label == index) & known, (prediction == index) & known
            if truth.any():
                values.append(2.0 * (truth & guess).sum() / (truth.sum() + guess.sum()))
        if values:
            per_class.append(np.mean(values))
    return float(np.mean(per_class))


def test_figure4_segments_the_test_split_as_the_evaluation_did(bench, study, figures, tmp_path):
    _, root = study
    folder = _folder(bench, root, "unet")
    output = figures.segment_test_images(folder, count=1000)
    split = json.loads((folder / "split.json").read_text())
    assert output["ids"] == [str(item["image"]) for item in split["test"]]
    test = json.loads((folder / "test_metrics.json").read_text())
    reference = _dice_reference(output["labels"], output["predictions"], len(output["class_names"]))
    assert reference == pytest.approx(test["dice"]["mean"], abs=1e-5)
    three = figures.segment_test_images(folder, count=3)
    n = len(output["ids"])
    assert three["ids"] == [output["ids"][0], output["ids"][round((n - 1) / 2)], output["ids"][n - 1]]
    path = tmp_path / "figure4.png"
    figures.figure4([("U-Net", folder), ("DSP", _folder(bench, root, "dsp"))], path, count=2, title="tiny")
    from PIL import Image

    with Image.open(path) as picture:
        assert picture.size == (round(1.9 * 4 * 120), round((1.9 * 2 + 0.8) * 120))


def test_figure4_refuses_runs_of_different_test_splits(bench, study, figures, tmp_path, monkeypatch):
    _, root = study
    real = figures.segment_test_images
    monkeypatch.setattr(figures, "segment_test_images", lambda folder, count: {
        **real(folder, count), **({"ids": ["other.png"]} if "dsp" in str(folder) else {})})
    with pytest.raises(ValueError, match="differ from those of"):
        figures.figure4([("U-Net", _folder(bench, root, "unet")), ("DSP", _folder(bench, root, "dsp"))],
                        tmp_path / "x.png", count=1)


def test_figure5_embeddings_are_sampled_per_class_and_drawn(bench, study, figures, tmp_path):
    _, root = study
    folder = _folder(bench, root, "dsp")
    parser = figures.load_run_config(folder)
    network = parser.get_parsed_content("network").cpu().eval()
    item = parser.get_parsed_content("experiment")["validation"][0]
    data = parser.get_parsed_content("validate#preprocessing")(dict(item))
    image, label = np.asarray(data["image"]), np.asarray(data["label"])
    embeddings, classes = figures.embedding_sample(network, [image], [label], 5, np.random.default_rng(0), 11)
    counts = {c: int((label == c).sum()) for c in range(11)}
    assert sorted(np.unique(classes).tolist()) == [c for c in range(11) if counts[c]]
    assert all((classes == c).sum() == min(5, counts[c]) for c in range(11))
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    pixels, centres = figures.tsne_points(embeddings, np.eye(8)[:3], seed=0)
    assert pixels.shape == (len(embeddings), 2) and centres.shape == (3, 2)
    path = tmp_path / "figure5.png"
    figures.figure5(folder, path, num_images=1, per_class=5, title="tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="snapshots has no network_iteration"):
        figures.figure5(_folder(bench, root, "unet"), tmp_path / "y.png")


def test_colour_labels_blends_the_class_colour_and_leaves_ignored_pixels_grey(figures):
    colours = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = np.array([[0.2, 0.4, 1.5]])
    labels = np.array([[1, 255, 0]])
    out = figures.colour_labels(image, labels, colours, alpha=0.5)
    assert np.allclose(out, [[[0.1, 0.1, 0.6], [0.4, 0.4, 0.4], [1.0, 0.5, 0.5]]])
