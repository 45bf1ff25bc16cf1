"""Figures 4 and 5 of the paper from finished runs of :mod:`bench_accuracy` (``bench_accuracy.py --figures``).

- :func:`figure4`: test images, their ground truth and every method's prediction (its best-validation model,
  ``models/model.pt``) as one PNG panel, in the fixed colours of the class table
  (:func:`dsp_monai.data.synthetic.class_colours`).
- :func:`figure5`: t-SNE (scikit-learn) of a DSP run's class prototypes and of pixel embeddings sampled per class from
  validation images, at the run's snapshots (``snapshot_iterations``: early, middle, end of training).

A run is rebuilt from its folder: ``run.json`` (config files, ACR, seed, overrides, written by
:func:`bench_accuracy.execute`) gives the bundle configuration, whose experiment section reads the run's split file,
so the images, transforms, network and inferer are the ones of the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def load_run_config(folder: Path):
    """The parsed bundle configuration (``monai.bundle.ConfigParser``) of the run in ``folder``.

    Raises:
        FileNotFoundError: when ``folder/run.json`` is missing (runs of an earlier runner did not record it).
    """
    from monai.bundle import ConfigParser

    record = Path(folder) / "run.json"
    if not record.exists():
        raise FileNotFoundError(f"{record} is missing: the run's settings are unknown (train it with "
                                "benchmarks/bench_accuracy.py, which records them)")
    settings = json.loads(record.read_text())
    parser = ConfigParser()
    parser.read_config([str(REPO / c) if not Path(c).is_absolute() else c for c in settings["configs"]])
    parser.update({**settings["overrides"], "acr": settings["acr"], "seed": settings["seed"],
                   "output_dir": str(folder), "models_dir": str(Path(folder) / "models")})
    parser.get_parsed_content("imports")
    return parser


def _load_weights(network: torch.nn.Module, path: Path, device) -> None:
    state = torch.load(path, map_location=device, weights_only=True)
    if set(state) == {"model"} or set(state) == {"network"}:
        state = next(iter(state.values()))
    network.load_state_dict(state)


def segment_test_images(folder: Path, count: int) -> dict:
    """``count`` test images of a run (spread evenly over its test split, all of them when ``count`` is at least
    their number), their labels and the run's predictions (best-validation model, through the run's validation
    inferer): ``{"ids", "images", "labels", "predictions", "class_names"}``, 2D
    arrays."""
    parser = load_run_config(folder)
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("segmentation_network")
    _load_weights(network, Path(folder) / "models" / "model.pt", device)
    network.eval()
    test = parser.get_parsed_content("experiment")["test"]
    items = [test[i] for i in np.unique(np.linspace(0, len(test) - 1, min(count, len(test))).round().astype(int))]
    transform = parser.get_parsed_content("validate#preprocessing")
    inferer = parser.get_parsed_content("validate#inferer")
    out = {"ids": [], "images": [], "labels": [], "predictions": [],
           "class_names": list(parser.get_parsed_content("class_names"))}
    with torch.no_grad():
        for item in items:
            data = transform(dict(item))
            image = torch.as_tensor(data["image"])[None].float().to(device)
            logits = inferer(image, network)
            out["ids"].append(str(item.get("image")))
            out["images"].append(np.asarray(data["image"])[0])
            out["labels"].append(np.asarray(data["label"])[0])
            out["predictions"].append(logits.argmax(1)[0].cpu().numpy())
    return out


def colour_labels(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.55,
                  ignore_index: int = 255) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1]: the grey image (values in [0, 1]) with each labelled pixel blended with its class
    colour; ``ignore_index`` pixels stay grey."""
    grey = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=2)
    known = (labels >= 0) & (labels < len(colours)) & (labels != ignore_index)
    out = grey.copy()
    out[known] = (1 - alpha) * grey[known] + alpha * colours[labels[known]]
    return out


def figure4(panels, path: Path, count: int = 3, title: str = "") -> None:
    """Figure 4: one row per test image (``count`` spread over the test split), columns image, ground truth and each
    run's prediction.

    Args:
        panels: ``[(column title, run folder), ...]``; the runs must share their test split (same seed).
        path: the PNG to write.

    Raises:
        ValueError: when the runs' test images differ.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from dsp_monai.data.synthetic import class_colours

    outputs = [(name, segment_test_images(folder, count)) for name, folder in panels]
    first = outputs[0][1]
    for (name, output), (_, folder) in zip(outputs, panels):
        if output["ids"] != first["ids"]:
            raise ValueError(f"{folder}: its test images {output['ids']} differ from those of {panels[0][1]} "
                             f"({first['ids']}); Figure 4 compares runs of one seed")
    colours = class_colours(first["class_names"])
    columns = 2 + len(outputs)
    rows = len(first["images"])
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.8), dpi=120, squeeze=False)
    for row in range(rows):
        image = first["images"][row]
        pictures = [np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2),
                    colour_labels(image, first["labels"][row], colours)]
        pictures += [colour_labels(image, output["predictions"][row], colours) for _, output in outputs]
        for column, (picture, name) in enumerate(zip(pictures, ["image", "ground truth", *[n for n, _ in outputs]])):
            axis = axes[row][column]
            axis.imshow(picture, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=7)
    handles = [Patch(color=colours[i], label=name) for i, name in enumerate(first["class_names"])]
    _save(figure, handles, title, path, rect=(0, 0.08, 1, 0.96))



def _save(figure, handles, title: str | None, path: Path, rect) -> None:
    """A figure's shared ending: the class legend below the panels, the title, the layout within ``rect``, the PNG."""
    import matplotlib.pyplot as plt

    figure.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=6, frameon=False)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout(rect=rect)
    figure.savefig(path)
    plt.close(figure)

def snapshots(folder: Path) -> list[tuple[int, Path]]:
    """The network snapshots of a run, ``(iteration, path)`` by iteration."""
    found = []
    for path in (Path(folder) / "snapshots").glob("network_iteration=*.pt"):
        match = re.search(r"=(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def embedding_sample(network, images, labels, per_class: int, rng: np.random.Generator, num_classes: int):
    """L2-normalised pixel embeddings, up to ``per_class`` pixels of each class drawn from ``images`` (each
    (1, H, W) cropped to multiples of 16), with their classes: ``(embeddings (N, D), classes (N,))``."""
    chosen, classes = [], []
    with torch.no_grad():
        for image, label in zip(images, labels):
            height, width = (image.shape[-2] // 16) * 16, (image.shape[-1] // 16) * 16
            batch = torch.as_tensor(image[None, :, :height, :width]).float()
            embeddings = network(batch, outputs=("embeddings",))["embeddings"][0]
            embeddings = torch.nn.functional.normalize(embeddings.float(), dim=0)
            chosen.append(embeddings.reshape(embeddings.shape[0], -1).T.numpy())
            classes.append(np.asarray(label)[0, :height, :width].reshape(-1))
    embeddings, classes = np.concatenate(chosen), np.concatenate(classes)
    keep = []
    for index in range(num_classes):
        where = np.flatnonzero(classes == index)
        if where.size:
            keep.append(rng.choice(where, size=min(per_class, where.size), replace=False))
    keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)
    return embeddings[keep], classes[keep]


def tsne_points(embeddings: np.ndarray, prototypes: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-dimensional t-SNE (scikit-learn) of pixel embeddings and prototypes together (both L2-normalised,
    cosine geometry as the DSP head scores them): ``(pixel points, prototype points)``."""
    from sklearn.manifold import TSNE

    stacked = np.concatenate([embeddings, prototypes]).astype(np.float64)
    perplexity = float(min(30.0, max(2.0, (len(stacked) - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine",
                  random_state=seed).fit_transform(stacked)
    return points[:len(embeddings)], points[len(embeddings):]


def figure5(folder: Path, path: Path, num_images: int = 4, per_class: int = 150, seed: int = 0,
            title: str = "") -> None:
    """Figure 5: t-SNE of the prototypes and of pixel embeddings sampled per class from the first ``num_images``
    validation images, at the first, middle and last snapshot of a DSP run (one panel each).

    Raises:
        FileNotFoundError: when the run has no snapshots (train it with ``snapshot_iterations``).
        ValueError: when the run's network has no prototypes (not a DSP network).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dsp_monai.data.synthetic import class_colours

    found = snapshots(folder)
    if not found:
        raise FileNotFoundError(f"{folder}/snapshots has no network_iteration=*.pt: train the DSP run with "
                                "snapshot_iterations (bench_accuracy.py sets it for dsp)")
    picked = [found[0], found[len(found) // 2], found[-1]] if len(found) >= 3 else found
    parser = load_run_config(folder)
    network = parser.get_parsed_content("network").cpu()
    if not hasattr(network, "prototypes"):
        raise ValueError(f"{folder}: the network {type(network).__name__} has no prototypes (Figure 5 is for DSP)")
    items = parser.get_parsed_content("experiment")["validation"][:num_images]
    transform = parser.get_parsed_content("validate#preprocessing")
    data = [transform(dict(item)) for item in items]
    images = [np.asarray(d["image"]) for d in data]
    labels = [np.asarray(d["label"]) for d in data]
    class_names = list(parser.get_parsed_content("class_names"))
    colours = class_colours(class_names)
    figure, axes = plt.subplots(1, len(picked), figsize=(3.6 * len(picked), 3.9), dpi=120, squeeze=False)
    for axis, (iteration, snapshot) in zip(axes[0], picked):
        _load_weights(network, snapshot, "cpu")
        network.eval()
        embeddings, classes = embedding_sample(network, images, labels, per_class, np.random.default_rng(seed),
                                               len(class_names))
        prototypes = torch.nn.functional.normalize(network.prototypes.detach().float(), dim=-1)
        prototype_classes = np.repeat(np.arange(prototypes.shape[0]), prototypes.shape[1])
        pixels, centres = tsne_points(embeddings, prototypes.reshape(-1, prototypes.shape[-1]).numpy(), seed)
        axis.scatter(pixels[:, 0], pixels[:, 1], s=3, c=colours[classes], alpha=0.6, linewidths=0)
        axis.scatter(centres[:, 0], centres[:, 1], s=60, c=colours[prototype_classes], marker="*",
                     edgecolors="black", linewidths=0.6)
        axis.set_title(f"iteration {iteration}", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    present = sorted(set(np.concatenate([np.unique(label[label != 255]) for label in labels]).tolist()))
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[i], label=class_names[i]) for i in present]
    handles.append(plt.Line2D([], [], marker="*", linestyle="", color="white", markeredgecolor="black",
                              markersize=9, label="prototypes"))
    _save(figure, handles, title, path, rect=(0, 0.1, 1, 0.95))
