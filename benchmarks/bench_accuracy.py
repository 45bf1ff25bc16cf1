"""Test-set accuracy of the methods over scenarios, annotation compression rates (ACR) and seeds, through the bundle's
CLI: the paper's Tables 2 and 3, Dice-versus-ACR plots, and (``--figures``) Figures 4 and 5.

Every run is a subprocess of ``python -m monai.bundle run training`` and then ``... evaluating`` on
``bundle/configs/train.yaml`` + ``configs/methods/<method>.yaml`` + the profile's and the caller's config files + the
run's ``overrides.yaml`` (the scenario's and the caller's ``--set`` overrides), in its own folder
``ROOT/<variant>/<scenario>/<method>/acr<ACR>/seed<SEED>`` (logs ``train.log`` and ``evaluate.log``, the settings
``run.json``). The seed draws the cross-sub-volume split and which training images keep their masks; every method,
scenario and variant sees the same split and the same masked images for a seed. All methods train for the same
number of iterations.

Scenarios (:data:`SCENARIOS`): ``mixed`` (masks + tags, boxes and points, the paper's Table 3), ``tags``, ``boxes``,
``points`` (masks + one weak type, Table 2), ``none`` (``weak_types: []``: the images without masks stay in
training, unannotated: semi-supervised) and ``masks`` (``training_types: [mask]``: the images without masks are left
out of training). ``mixed`` minus ``masks`` of the same method, ACR and seed is the weak labels' own share (together
with the unannotated images they come on); ``mixed`` minus ``none`` is the share of the weak labels alone.

A *variant* (``--variant NAME``, default ``default``) is a recipe: the ``--config`` / ``--set`` given with it, the
same for every method (e.g. a training budget and a supervised-loss balancing). Variants live in their own run
folders; ``--report-only --variant A B`` reports them side by side. ``run.json`` holds a run's settings; running a
variant again with other settings is refused (choose another variant name).

Resumable: a run whose ``test_metrics.json`` reads back is skipped, a run that finished training is only evaluated
(an unreadable ``test_metrics.json`` is evaluated again), and an interrupted training resumes from its last checkpoint
(the bundle does that). Run the same command again to continue.

The study's record (``--records``, default ``benchmarks/records/<profile>``, kept in the repository): run folders
live under ``runs/``, which another checkout does not have, so every finished run also leaves one small JSON file
there, at the run folder's path (``<variant>/<scenario>/<method>/acr<ACR>/seed<SEED>.json``: its settings, result,
the seed's test-split support, its median epoch time and machine). A run with a record is done: it is not trained
again, and ``--report-only`` reports it from the record when its folder is missing, on any machine. A record
recovered from an earlier report holds the test mean alone; ``<records>/recovered_tables.md``, when present, keeps
that report's other tables of those runs and closes the section.

    python benchmarks/bench_accuracy.py                                   # dsp and unet, mixed, ACR 1 and 32, seeds 0-2
    python benchmarks/bench_accuracy.py --methods unet fixmatch_plf dsp --scenarios mixed boxes --acrs 1 8 32
    python benchmarks/bench_accuracy.py --variant ce_dice --set supervised_loss=ce_dice --methods unet dsp
    python benchmarks/bench_accuracy.py --report-only --variant default ce_dice --scenarios mixed boxes
    python benchmarks/bench_accuracy.py --figures --methods unet fixmatch_plf dsp --acrs 32 --seeds 0
    python benchmarks/bench_accuracy.py --budget --variant ce_dice --set supervised_loss=ce_dice --methods unet dsp
    python benchmarks/bench_accuracy.py --gpu                             # on a GPU machine: the paper-size profile
    python benchmarks/bench_accuracy.py --ablation configs/sweeps/ablation.yaml --acrs 32 --seeds 0 1

Profiles (:func:`profile_of`): on a CPU the study profile ``configs/sweeps/cpu_study.yaml`` (300 iterations: a
quick look, too short to measure what weak labels add) is added before the caller's ``--config`` files; ``--budget``
adds the study's budget ``configs/sweeps/cpu_budget.yaml`` after it (4000 iterations, where the masks-only U-Net
at ACR 1 reaches its validation plateau); with ``--gpu`` neither is, and the bundle picks its GPU profile (the
paper's U-Net and batch) by itself. Each profile has its own run root, RESULTS.md section and plots. DSP runs write
snapshots of the network at 10 %, 50 % and 100 % of training (``snapshot_iterations``) for Figure 5.

Writes the tables (Table 3: mixed; Table 2: one block per single weak type; the weak labels' own share; paired
differences to the U-Net and to FixMatch + PLF; per seed; validation; per class) with the machine and the exact
command to the ``accuracy-<profile>`` section of benchmarks/RESULTS.md, and one Dice-versus-ACR plot per scenario
to benchmarks/accuracy_vs_acr[_<scenario>][_<profile>].png (no profile name for ``cpu``). ``--figures`` instead draws Figure 4 (test images,
ground truth and every method's prediction, at the largest ``--acrs`` and the first seed) and Figure 5 (t-SNE of the
DSP run's prototypes and pixel embeddings at its snapshots) with :mod:`study_figures`. ``--ablation FILE`` trains the
variants of FILE (a YAML mapping ``name: {description, overrides}``, overrides being bundle config ids applied to the
DSP method) and reports their *validation* Dice, the quantity settings are chosen by, in the section named after
FILE's stem.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from dsp_monai.data.files import write_json, write_text  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METHOD_LABELS = {"unet": "U-Net (masks only)", "fixmatch_plf": "FixMatch + PLF", "dsp": "DSP",
                 "euclidean_branch": "Euclidean point branch", "geodesic_branch": "Geodesic point branch",
                 "pseudo_label": "Pseudo-label", "pseudo_label_plf": "Pseudo-label + PLF", "fixmatch": "FixMatch",
                 "cls_branch": "Classification branch", "box_projection": "Box projection", "con2r": "Con2R"}
# The three methods of the no-harm benchmark (its columns).
METHOD_ORDER = ("unet", "fixmatch_plf", "dsp")
# The rows of the paper's comparison (supplement Table 2, docs/methods.md), in its order.
PAPER_ORDER = ("unet", "cls_branch", "box_projection", "euclidean_branch", "geodesic_branch", "pseudo_label",
               "pseudo_label_plf", "con2r", "fixmatch", "fixmatch_plf", "dsp")
# The methods every other method is compared with on the same seed: the two baselines of the issue, then DSP itself
# (where another method of the comparison beats it).
REFERENCES = ("unet", "fixmatch_plf", "dsp")
CPU_PROFILE = "configs/sweeps/cpu_study.yaml"
# The study's budget (docs/experiments.md): laid over CPU_PROFILE by --budget.
BUDGET_PROFILE = "configs/sweeps/cpu_budget.yaml"
DEFAULT_VARIANT = "default"
# What each scenario sets (bundle config ids) and what it means.
SCENARIOS = {
    "mixed": ({"weak_types": ["tags", "boxes", "points"]}, "masks + tags, boxes and points in turn"),
    "tags": ({"weak_types": ["tags"]}, "masks + tags"),
    "boxes": ({"weak_types": ["boxes"]}, "masks + boxes"),
    "points": ({"weak_types": ["points"]}, "masks + points"),
    "none": ({"weak_types": []}, "masks + the other images unannotated (semi-supervised, no weak labels)"),
    "masks": ({"training_types": ["mask"]}, "the masked images only (the other images left out of training)"),
}
SINGLE_TYPES = ("tags", "boxes", "points")
# Figure 5 needs the DSP network at three points of training: 10 %, 50 % and 100 % of the iterations.
SNAPSHOTS = ("$[max(1, @max_epochs * @iterations_per_epoch // 10), @max_epochs * @iterations_per_epoch // 2, "
             "@max_epochs * @iterations_per_epoch]")


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


def run_dir(root: Path, variant: str, scenario: str, method: str, acr: int, seed: int) -> Path:
    """The folder of one run of the study."""
    return root / variant / scenario / method / f"acr{acr}" / f"seed{seed}"


def ablation_dir(root: Path, name: str, acr: int, seed: int) -> Path:
    """The folder of one run of an ablation variant."""
    return root / name / f"acr{acr}" / f"seed{seed}"


def run_overrides(scenario: str, method: str, shared: dict) -> dict:
    """The bundle overrides of one run: the scenario's, DSP's snapshots, then the caller's (which win)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
    return {**SCENARIOS[scenario][0], **({"snapshot_iterations": SNAPSHOTS} if method == "dsp" else {}), **shared}


def masks_only(method: str) -> bool:
    """Whether the method's file trains on the masked images alone (``training_types: [mask]``): then its runs do
    not depend on the scenario's weak labels (:func:`plan_study` trains it once, in the ``mixed`` folder)."""
    import yaml

    with open(REPO / "configs" / "methods" / f"{method}.yaml") as handle:
        return (yaml.safe_load(handle) or {}).get("training_types") == ["mask"]


def scenario_folder(scenario: str, method: str, shared: dict) -> str:
    """The scenario whose folder and settings a run uses: ``mixed`` for a :func:`masks_only` method (its run is the
    same in every scenario) unless ``shared`` sets ``weak_types`` or ``training_types``, else ``scenario``."""
    if not {"weak_types", "training_types"} & set(shared) and masks_only(method):
        return "mixed"
    return scenario


def _yaml_value(value) -> str:
    return json.dumps(value)


def write_overrides(folder: Path, overrides: dict) -> Path | None:
    """Writes ``overrides`` (bundle config ids -> values) as a config overlay in ``folder``; None when empty."""
    if not overrides:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "overrides.yaml"
    write_text(path, "".join(f"{key}: {_yaml_value(value)}\n" for key, value in overrides.items()))
    return path


def bundle_command(run_id: str, configs: list[str], acr: int, seed: int, folder: Path) -> list[str]:
    """The bundle CLI call of one run."""
    config_list = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    return [
        sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_list,
        "--acr", str(acr), "--seed", str(seed), "--output_dir", str(folder), "--models_dir", str(folder / "models"),
    ]


def _read_json(path: Path):
    with open(path) as handle:
        return json.load(handle)


def read_json_or_none(path: Path):
    """The content of a JSON file, or None when it is missing or does not read back (a half-written file)."""
    try:
        return _read_json(path)
    except (OSError, ValueError):
        return None


def _training_finished(folder: Path) -> bool:
    metrics = read_json_or_none(folder / "metrics.json")
    return isinstance(metrics, dict) and bool(metrics.get("finished"))


def _test_metrics(folder: Path) -> dict | None:
    test = read_json_or_none(folder / "test_metrics.json")
    return test if isinstance(test, dict) and isinstance(test.get("dice"), dict) else None


def _call(args: list[str], log: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run(args, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"command failed with exit code {result.returncode}; log: {log}\n{tail}")


_EPOCH_TIME = re.compile(r"MethodTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def epoch_seconds(log: Path) -> dict:
    """``{epoch: wall seconds}`` of the trainer's epochs (iterations, validation and checkpoint) from a run's
    ``train.log`` ({} without one). The last record of an epoch counts, so a run interrupted and resumed is timed by
    the epochs that completed; the evaluator's own epoch records are not the trainer's."""
    if not log.exists():
        return {}
    return {int(m[0]): 3600 * int(m[1]) + 60 * int(m[2]) + float(m[3])
            for m in _EPOCH_TIME.findall(log.read_text(errors="replace"))}


def run_settings(configs: list[str], acr: int, seed: int, overrides: dict) -> dict:
    """What defines a run (recorded in its ``run.json``), as it reads back from JSON."""
    return json.loads(json.dumps({"configs": list(configs), "acr": acr, "seed": seed, "overrides": overrides}))


def execute(folder: Path, configs: list[str], acr: int, seed: int, overrides: dict) -> dict:
    """Trains (or resumes) and test-evaluates one run unless its test_metrics.json reads back; returns what it did.

    Raises:
        RuntimeError: when the folder holds a run of other settings, or a bundle command fails (with its log's tail).
    """
    settings = run_settings(configs, acr, seed, overrides)
    check_settings(folder, settings)
    if _test_metrics(folder) is not None:
        return {"status": "skipped"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_metrics.json").unlink(missing_ok=True)  # one that does not read back
    write_json(folder / "run.json", settings)
    extra = write_overrides(folder, overrides)
    configs = [*configs, *([str(extra)] if extra else [])]
    started = time.perf_counter()
    if not _training_finished(folder):
        _call(bundle_command("training", configs, acr, seed, folder), folder / "train.log")
    trained = time.perf_counter()
    _call(bundle_command("evaluating", [*configs, "bundle/configs/evaluate.yaml"], acr, seed, folder),
          folder / "evaluate.log")
    return {"status": "ran", "train_s": trained - started, "total_s": time.perf_counter() - started}


def check_recorded(recorded, settings: dict, where: Path) -> None:
    """Raises when ``recorded`` (a run's settings as its ``run.json`` or record keeps them; None: nothing recorded)
    differs from ``settings``.

    Raises:
        RuntimeError: naming ``where`` and both settings.
    """
    if recorded is not None and recorded != settings:
        raise RuntimeError(
            f"{where} holds a run with other settings: it records {recorded}, this command asks for {settings}. "
            "Give this recipe its own --variant (or --root and --records), or move the run away to train it again."
        )


def check_settings(folder: Path, settings: dict) -> None:
    """Raises when ``folder/run.json`` records other settings than ``settings`` (:func:`check_recorded`)."""
    check_recorded(read_json_or_none(folder / "run.json"), settings, folder)


def record_file(records: Path, root: Path, folder: Path) -> Path:
    """The record of the run in ``folder`` (below ``root``): the folder's path below ``records``, as a JSON file."""
    return records / f"{folder.relative_to(root)}.json"


def make_record(folder: Path) -> dict | None:
    """What the study keeps of a finished run (None when it has not finished): its settings (``run.json``), its
    result (:func:`load_result`), the annotated pixels per class of its seed's test split (None without a split
    file), its median epoch time in seconds (None without epoch records) and the machine it was recorded on."""
    result = load_result(folder)
    if result is None:
        return None
    seconds = list(epoch_seconds(folder / "train.log").values())
    split = folder / "split.json"
    return {"settings": read_json_or_none(folder / "run.json"), "result": result,
            "test_support": test_split_support(split) if split.exists() else None,
            "epoch_seconds_median": statistics.median(seconds) if seconds else None,
            "machine": common.machine()}


def read_record(path: Path) -> dict | None:
    """A run's record, or None when there is none or it does not read back as one (a mapping whose ``result`` holds
    a test mean)."""
    record = read_json_or_none(path)
    if not isinstance(record, dict) or not isinstance(record.get("result"), dict):
        return None
    return record if isinstance(record["result"].get("test"), (int, float)) else None


def load_result(folder: Path) -> dict | None:
    """Validation and test Dice of a finished run, or None (also for files that do not read back)."""
    metrics, test = read_json_or_none(folder / "metrics.json"), _test_metrics(folder)
    if test is None or not isinstance(metrics, dict):
        return None
    best = metrics.get("best_validation") or {}
    return {
        "test": test["dice"]["mean"],
        "test_per_class": test["dice"]["per_class"],
        "val": best.get("mean"),
        "val_epoch": best.get("epoch"),
        "iterations": metrics.get("iterations"),
        "seconds": metrics.get("seconds"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Aggregation (pure functions of the results, tested in tests/benchmarks/test_bench_accuracy.py).
# The study's results are {(variant, scenario, method, acr, seed): result dict of load_result}.
# ---------------------------------------------------------------------------------------------------------------


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values (NaN, NaN, 0 if none)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return math.nan, math.nan, 0
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def format_mean_std(values, scale: float = 100.0) -> str:
    """``mean ± std (n)`` in percent points, or ``-`` when there is nothing."""
    mean, std, count = mean_std(values)
    if not count:
        return "-"
    return f"{round(scale * mean, 1) + 0.0:.1f} ± {scale * std:.1f} ({count})"  # + 0.0: no "-0.0"


def ordered_methods(methods) -> list[str]:
    """The methods in the paper's order (:data:`PAPER_ORDER`: U-Net first, FixMatch + PLF and DSP last), then any
    others alphabetically."""
    known = [m for m in PAPER_ORDER if m in methods]
    return known + sorted(set(methods) - set(known))


def _variants(results: dict) -> list[str]:
    return list(dict.fromkeys(key[0] for key in results))


def _label(method: str, variant: str, several: bool) -> str:
    return METHOD_LABELS.get(method, method) + (f" [{variant}]" if several else "")


def _rows(results: dict, scenario: str) -> list[tuple[str, str]]:
    """The (method, variant) rows of a scenario: methods in the paper's order, each in the variants' order."""
    present = {(k[2], k[0]) for k in results if k[1] == scenario}
    return [(m, v) for m in ordered_methods({m for m, _ in present}) for v in _variants(results) if (m, v) in present]


def _acrs(results: dict, scenario: str) -> list[int]:
    return sorted({k[3] for k in results if k[1] == scenario})


def _values(results: dict, variant: str, scenario: str, method: str, acr: int, key: str) -> dict:
    """``{seed: value}`` of one cell (the seeds whose result has ``key``: a record recovered from an earlier report
    holds the test mean alone)."""
    return {k[4]: r[key] for k, r in results.items()
            if k[:4] == (variant, scenario, method, acr) and r.get(key) is not None}


def scenario_table(results: dict, scenario: str, key: str = "test") -> str:
    """Markdown table of one scenario: one row per method (and variant, when several), one column per ACR, cells
    ``mean ± std (seeds)`` of ``key`` (``"test"``, ``"val"`` or ``"test_supported"``) in percent; a method without
    any value of ``key`` has no row."""
    several = len(_variants(results)) > 1
    acrs = _acrs(results, scenario)
    rows = [[_label(m, v, several), *[format_mean_std(_values(results, v, scenario, m, a, key).values())
                                      for a in acrs]] for m, v in _rows(results, scenario)]
    rows = [row for row in rows if any(cell != "-" for cell in row[1:])]
    return common.table(["method", *[f"ACR {a}" for a in acrs]], rows)


def paired_table(results: dict, scenario: str, key: str = "test") -> str:
    """Markdown table of the paired differences (same seed: same split and masked images) of every method to the
    U-Net, to FixMatch + PLF and to DSP of the same variant (each pair once: a reference is not compared with the
    references before it); DSP also to the baselines of every other variant (the stronger baseline is the honest
    one). Cells ``mean ± std (pairs)`` in percent points."""
    several = len(_variants(results)) > 1
    acrs = _acrs(results, scenario)
    rows_present = _rows(results, scenario)
    rows = []
    for reference in REFERENCES:
        skip = REFERENCES[:REFERENCES.index(reference) + 1]
        for method, variant in rows_present:
            if method in skip:
                continue
            targets = [variant] + ([w for w in _variants(results) if w != variant] if method == "dsp" else [])
            for target in targets:
                if (reference, target) not in rows_present:
                    continue
                cells = []
                for acr in acrs:
                    mine = _values(results, variant, scenario, method, acr, key)
                    theirs = _values(results, target, scenario, reference, acr, key)
                    cells.append(format_mean_std([mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]))
                if any(cell != "-" for cell in cells):
                    rows.append([f"{_label(method, variant, several)} − {_label(reference, target, several)}",
                                 *cells])
    return common.table(["paired difference", *[f"ACR {a}" for a in acrs]], rows) if rows else "(no pairs)"


def seed_table(results: dict, scenario: str, key: str = "test") -> str:
    """Markdown table of every run's ``key`` Dice of a scenario: rows ACR and method, one column per seed."""
    several = len(_variants(results)) > 1
    seeds = sorted({k[4] for k in results if k[1] == scenario})
    rows = []
    for acr in _acrs(results, scenario):
        for method, variant in _rows(results, scenario):
            values = _values(results, variant, scenario, method, acr, key)
            if values:
                rows.append([acr, _label(method, variant, several),
                             *[f"{100 * values[s]:.1f}" if s in values else "-" for s in seeds]])
    return common.table(["ACR", "method", *[f"seed {s}" for s in seeds]], rows)


def per_class_table(results: dict, scenario: str) -> str:
    """Markdown table of the test Dice per class of a scenario (mean over the seeds where the class is in the test
    set; ``n/a`` where it never is) and the mean Dice of the same runs. Runs without per-class results (records
    recovered from an earlier report) are left out; a row that leaves some out names how many seeds it holds."""
    several = len(_variants(results)) > 1
    classes = []
    for key, result in results.items():
        if key[1] == scenario:
            classes += [c for c in result.get("test_per_class") or {} if c not in classes]
    rows = []
    for acr in _acrs(results, scenario):
        for method, variant in _rows(results, scenario):
            cell = [r for k, r in results.items() if k[:4] == (variant, scenario, method, acr)]
            runs = [r for r in cell if r.get("test_per_class") is not None]
            if not runs:
                continue
            label = _label(method, variant, several)
            if len(runs) < len(cell):
                label += f" ({len(runs)} of {len(cell)} seeds)"
            cells = []
            for name in classes:
                mean, _, count = mean_std([r["test_per_class"].get(name) for r in runs])
                cells.append(f"{100 * mean:.1f}" if count else "n/a")
            mean, _, _ = mean_std([r["test"] for r in runs])
            rows.append([acr, label, *cells, f"**{100 * mean:.1f}**"])
    return common.table(["ACR", "method", *classes, "mean"], rows)


SCANT_SHARE = 0.001  # a class under this share of a test split's annotated pixels is flagged in the support table


def scant_classes(support: dict) -> set[str]:
    """The classes of one test split (``{class name: annotated pixels}``) that are present but under
    ``SCANT_SHARE`` of its annotated pixels."""
    total = sum(support.values())
    return {name for name, count in support.items() if count and count / total < SCANT_SHARE}


def mean_without(per_class: dict, leave_out: set) -> float:
    """Mean of a run's per-class Dice over the classes present in its test split (value not None) and not in
    ``leave_out``; NaN when none is left."""
    values = [value for name, value in per_class.items() if value is not None and name not in leave_out]
    return statistics.fmean(values) if values else math.nan


def add_supported_means(results: dict, supports: dict) -> None:
    """Give every result with per-class Dice ``"test_supported"``: its test mean Dice without its seed's scant classes
    (:func:`scant_classes` of ``supports[seed]``; nothing is left out for a seed without a support count)."""
    for key, result in results.items():
        if result.get("test_per_class") is not None:
            result["test_supported"] = mean_without(result["test_per_class"],
                                                    scant_classes(supports.get(key[-1], {})))


def support_table(supports: dict) -> str:
    """Markdown table of each class's annotated pixels in each seed's test split (the split is the seed's), flagging
    a class that is present but under ``SCANT_SHARE`` of the split's annotated pixels: it takes a full place in the
    mean over present classes although a handful of pixels decides its Dice.

    Args:
        supports: ``{seed: {class name: pixel count}}``.
    """
    seeds = sorted(supports)
    classes = []
    for seed in seeds:
        classes += [name for name in supports[seed] if name not in classes]
    totals = {seed: sum(supports[seed].values()) for seed in seeds}
    scant = {seed: scant_classes(supports[seed]) for seed in seeds}
    rows = []
    for name in classes:
        cells = []
        for seed in seeds:
            count = supports[seed].get(name, 0)
            share = count / totals[seed] if totals[seed] else 0.0
            flag = " (scant)" if name in scant[seed] else ""
            cells.append(f"{count} ({100 * share:.2f}%){flag}" if count else "0")
        rows.append([name, *cells])
    return common.table(["class", *[f"seed {seed}" for seed in seeds]], rows)


def test_split_support(split_file: Path) -> dict:
    """``{class name: annotated pixels}`` of the test items of a run's split file (labels read as training reads
    them; the ignore value is not counted)."""
    import numpy as np
    from monai.transforms import LoadImage

    from dsp_monai.data.readers import MultiFormatReader

    split = _read_json(split_file)
    names = list(split["class_names"])
    load = LoadImage(reader=MultiFormatReader(class_names=names), image_only=True)
    counts = np.zeros(len(names), dtype=np.int64)
    for item in split["test"]:
        label = np.asarray(load(item["label"])).astype(np.int64).ravel()
        counts += np.bincount(label[(label >= 0) & (label < len(names))], minlength=len(names))
    return {name: int(count) for name, count in zip(names, counts)}


def share_table(results: dict, base: str = "mixed", key: str = "test") -> str:
    """Markdown table of the weak labels' own share: every method with runs in ``base`` and in ``masks`` or
    ``none``, its Dice in each, and the paired differences ``base − masks`` / ``base − none`` (same seed, same masked
    images). A :func:`masks_only` method (the U-Net) has the same run in every scenario, so no share: it has no
    row. Empty string when there is no such method."""
    several = len(_variants(results)) > 1
    others = [s for s in ("masks", "none") if any(k[1] == s for k in results)]
    present = [row for row in _rows(results, base)
               if not masks_only(row[0]) and any(row in _rows(results, s) for s in others)]
    if not present:
        return ""
    acrs = sorted({k[3] for k in results if k[1] in (base, *others)})
    rows = []
    for method, variant in present:
        label = _label(method, variant, several)
        rows.append([label, base, *[format_mean_std(_values(results, variant, base, method, a, key).values())
                                    for a in acrs]])
        for other in others:
            if (method, variant) not in _rows(results, other):
                continue
            rows.append([label, other, *[format_mean_std(_values(results, variant, other, method, a, key).values())
                                         for a in acrs]])
            cells = []
            for acr in acrs:
                full = _values(results, variant, base, method, acr, key)
                less = _values(results, variant, other, method, acr, key)
                cells.append(format_mean_std([full[s] - less[s] for s in sorted(set(full) & set(less))]))
            rows.append([label, f"{base} − {other} (paired)", *cells])
    return common.table(["method", "training set", *[f"ACR {a}" for a in acrs]], rows)


def ablation_table(results: dict, variants: dict, reference: str | None = None) -> str:
    """Markdown table of the validation Dice of ablation variants: per seed, mean ± std, and the paired difference
    to ``reference`` (the first variant by default).

    Args:
        results: ``{(variant, acr, seed): result dict}``.
        variants: ``{name: {"description": str, "overrides": dict}}`` in display order.
        reference: the variant the differences are taken to.
    """
    names = [n for n in variants if any(v == n for v, _, _ in results)]
    if not names:
        return "(no finished runs)"
    reference = reference if reference in names else names[0]
    acrs = sorted({a for _, a, _ in results})
    seeds = sorted({s for _, _, s in results})
    rows = []
    for acr in acrs:
        for name in names:
            runs = {s: results[name, acr, s] for s in seeds if (name, acr, s) in results}
            if not runs:
                continue
            paired = [runs[s]["val"] - results[reference, acr, s]["val"] for s in runs
                      if (reference, acr, s) in results]
            overrides = variants[name].get("overrides") or {}
            setting = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "(reference)"
            rows.append([
                acr, name, variants[name].get("description", ""), setting,
                *[f"{100 * runs[s]['val']:.1f}" if s in runs else "-" for s in seeds],
                format_mean_std([r["val"] for r in runs.values()]),
                "-" if name == reference else format_mean_std(paired),
            ])
    return common.table(["ACR", "variant", "what", "overrides", *[f"val seed {s}" for s in seeds],
                         "val mean ± std (n)", f"Δ vs {reference} (paired)"], rows)


def plot(results: dict, scenario: str, path: Path, title: str) -> dict:
    """Dice-versus-ACR plot of one scenario: test mean Dice per method (and variant: line style), mean over seeds
    as a line, ± one standard deviation shaded, on a log2 ACR axis. Returns what it drew: ``{line label: (ACRs,
    means, stds)}`` in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"unet": "tab:gray", "fixmatch_plf": "tab:blue", "dsp": "tab:red"}
    others = iter(["tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
                   "black"])
    styles = ["-", "--", ":", "-."]
    variants = _variants(results)
    drawn = {}
    figure, axis = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    for method, variant in _rows(results, scenario):
        if method not in colours:
            colours[method] = next(others, None)
        acrs = [a for a in _acrs(results, scenario) if _values(results, variant, scenario, method, a, "test")]
        stats = [mean_std(_values(results, variant, scenario, method, a, "test").values()) for a in acrs]
        mean = [100 * s[0] for s in stats]
        std = [100 * s[1] for s in stats]
        line, = axis.plot(acrs, mean, color=colours[method], linestyle=styles[variants.index(variant) % len(styles)],
                          marker="o", markersize=3.5, linewidth=1.6,
                          label=_label(method, variant, len(variants) > 1))
        axis.fill_between(acrs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                          color=line.get_color(), alpha=0.15, linewidth=0)
        drawn[line.get_label()] = (acrs, mean, std)
    acrs = _acrs(results, scenario)
    axis.set_xscale("log", base=2)
    axis.set_xticks(acrs)
    axis.set_xticklabels([str(a) for a in acrs])
    axis.set_xlabel("annotation compression rate (ACR)")
    axis.set_ylabel("test mean Dice (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, handlelength=3.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return drawn


def profile_of(args) -> tuple[str, list[str]]:
    """The profile of a command (``cpu``, ``budget`` or ``gpu``) and the config files it lays after the method file.

    Raises:
        SystemExit: for ``--gpu`` with ``--budget``.
    """
    if args.gpu and args.budget:
        raise SystemExit("--gpu and --budget exclude each other: --budget is the CPU study's budget, --gpu the "
                         "paper-size profile of a GPU machine")
    if args.gpu:
        return "gpu", []
    if args.budget:
        return "budget", [CPU_PROFILE, BUDGET_PROFILE]
    return "cpu", [CPU_PROFILE]


def _suffix(profile: str) -> str:
    return "" if profile == "cpu" else f"_{profile}"


def plot_path(scenario: str, profile: str) -> Path:
    """benchmarks/accuracy_vs_acr[_<scenario>][_<profile>].png (the mixed scenario without the scenario's name, the
    cpu profile without the profile's)."""
    name = "accuracy_vs_acr" + ("" if scenario == "mixed" else f"_{scenario}") + _suffix(profile)
    return REPO / "benchmarks" / f"{name}.png"


def figure_paths(profile: str) -> dict:
    """The paths of Figures 4 and 5 of a profile."""
    suffix = _suffix(profile)
    return {"figure4": REPO / "benchmarks" / f"figure4_predictions{suffix}.png",
            "figure5": REPO / "benchmarks" / f"figure5_tsne{suffix}.png"}


def report(results: dict, profile: str, header: str, plots: dict | None = None, figures: dict | None = None,
           supports: dict | None = None, archive: str | None = None) -> str:
    """The Markdown section of the study: Table 3 (mixed), Table 2 (one block per single weak type), the other
    scenarios, the weak labels' own share, the means without the scant classes (when the results carry
    ``"test_supported"``, :func:`add_supported_means`), then per seed, validation and per class.

    Args:
        results: ``{(variant, scenario, method, acr, seed): result}``.
        profile: ``"cpu"`` or ``"gpu"``.
        header: the machine / settings / command paragraph.
        plots: ``{scenario: plot file name}`` to link.
        figures: ``{"figure4" | "figure5": file name}`` to link.
        supports: ``{seed: {class: test-split pixels}}`` for the support table (:func:`support_table`).
        archive: Markdown of the tables that the recovered runs' records cannot rebuild, as the earlier report gave
            them (``<records>/recovered_tables.md``); appended when some results are recovered.
    """
    plots, figures = plots or {}, figures or {}
    scenarios = [s for s in SCENARIOS if any(k[1] == s for k in results)]

    def block(scenario: str) -> str:
        text = scenario_table(results, scenario) + "\n\nPaired differences (percent points):\n\n"
        text += paired_table(results, scenario) + "\n"
        if scenario in plots:
            text += f"\n![Dice versus ACR, {scenario}]({plots[scenario]})\n"
        return text

    recovered = sorted({r["recovered"] for r in results.values() if r.get("recovered")})
    parts = [
        f"## Accuracy versus annotation compression rate ({profile})\n\n", header,
        *(["Runs whose folders are gone are reported from records recovered from an earlier report ("
           + "; ".join(recovered) + "): they hold the test mean alone, rounded to 0.1 %, so a mean or a paired "
           "difference can differ by 0.1 from that report, and the tables of validation Dice, per-class Dice and "
           "means without the scant classes hold only the other runs"
           + ("; the earlier report's own tables of them close this section (\"The recovered runs' other tables\")"
              if archive else "") + ".\n\n"] if recovered else []),
        "Test mean Dice (%) over the classes present in the test split, of the best-validation checkpoint; mean ± "
        "sample std over seeds (number of seeds). The seed draws the cross-sub-volume split and the images that keep "
        "masks, so each seed is a different experiment and the paired rows compare methods on the same one (mean ± "
        "std of the per-seed differences). All methods train for the same number of iterations. A method that cannot "
        "use a weak type leaves those images out (docs/methods.md). Scenarios: "
        + "; ".join(f"`{s}` {SCENARIOS[s][1]}" for s in scenarios) + ".\n\n",
    ]
    if "mixed" in scenarios:
        parts.append("### Table 3: masks + mixed weak labels\n\n" + block("mixed") + "\n")
    singles = [s for s in SINGLE_TYPES if s in scenarios]
    if singles:
        parts.append("### Table 2: masks + one weak type\n\n")
        parts += [f"#### {SCENARIOS[s][1]} (`{s}`)\n\n" + block(s) + "\n" for s in singles]
    for scenario in ("none", "masks"):
        if scenario in scenarios:
            parts.append(f"### {SCENARIOS[scenario][1]} (`{scenario}`)\n\n" + block(scenario) + "\n")
    share = share_table(results)
    if share:
        parts.append(
            "### The weak labels' own share\n\n`mixed − masks`: what the images without masks add, with their weak"
            " labels (same masked images, same iterations); `mixed − none`: what the weak labels add over the same"
            " images unannotated.\n\n" + share + "\n\n")
    if any("test_supported" in result for result in results.values()):
        parts.append(
            "### Without the scant classes\n\nThe same runs, each seed's test mean Dice taken without the classes that"
            " are scant in its test split (support table under Details): a check that classes decided by a handful of"
            " test pixels do not decide the comparison.\n\n")
        for scenario in [s for s in scenarios if any(k[1] == s and "test_supported" in r for k, r in results.items())]:
            parts.append(f"`{scenario}`:\n\n" + scenario_table(results, scenario, "test_supported") + "\n\n"
                         + paired_table(results, scenario, "test_supported") + "\n\n")
    for name, title in (("figure4", "Figure 4: test images, ground truth and predictions"),
                        ("figure5", "Figure 5: t-SNE of the DSP prototypes and pixel embeddings")):
        if name in figures:
            parts.append(f"### {title}\n\n![{title}]({figures[name]})\n\n")
    parts.append("### Details\n\n")
    if supports:
        parts.append("Annotated pixels of each class in each seed's test split; a class marked scant (under "
                     f"{100 * SCANT_SHARE:g}% of the split's annotated pixels) still counts fully in the mean over "
                     "present classes:\n\n" + support_table(supports) + "\n\n")
    for scenario in scenarios:
        parts.append(f"Per-seed test mean Dice (%), `{scenario}`:\n\n" + seed_table(results, scenario) + "\n\n")
        if any(k[1] == scenario and r.get("val") is not None for k, r in results.items()):
            parts.append(f"Best validation mean Dice (%), the model-selection criterion, `{scenario}`:\n\n"
                         + scenario_table(results, scenario, "val") + "\n\n")
        if any(k[1] == scenario and r.get("test_per_class") is not None for k, r in results.items()):
            parts.append(f"Test Dice per class (%), mean over seeds, `{scenario}`:\n\n"
                         + per_class_table(results, scenario) + "\n\n")
    if recovered and archive:
        parts.append("### The recovered runs' other tables\n\n" + archive.strip() + "\n")
    return "".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def load_variants(path: str) -> dict:
    """The ablation variants of a YAML file: ``{name: {"description": str, "overrides": {id: value}}}``."""
    import yaml

    with open(REPO / path if not os.path.isabs(path) else path) as handle:
        content = yaml.safe_load(handle)
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected a mapping of variant names to {{description, overrides}}")
    for name, variant in content.items():
        if not isinstance(variant, dict) or not isinstance(variant.get("overrides") or {}, dict):
            raise ValueError(f"{path}: variant {name!r} must be a mapping with an 'overrides' mapping")
    return content


def reproduce_command(argv=None) -> str:
    """The command that reproduces the tables: this one (``argv``, default ``sys.argv``) without the options that
    only choose where outputs go, skip training or annotate the report (``--root``, ``--note``, ``--report-only``,
    ``--no-write``)."""
    argv = list(sys.argv if argv is None else argv)
    kept, skip = [], False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word in ("--root", "--note"):
            skip = True
        elif not word.startswith(("--root=", "--note=")) and word not in ("--report-only", "--no-write"):
            kept.append(shlex.quote(word))
    return " ".join(["python", os.path.relpath(argv[0], REPO), *kept])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dsp", "unet"],
                        help="method files of configs/methods (default: dsp unet)")
    parser.add_argument("--scenarios", nargs="+", default=["mixed"], choices=list(SCENARIOS),
                        help="annotation scenarios (default: mixed)")
    parser.add_argument("--acrs", nargs="+", type=int, default=[1, 32], help="ACRs (default: 1 32)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--variant", nargs="+", default=[DEFAULT_VARIANT], metavar="NAME",
                        help="the recipe's name, a run-folder level (default: default); several names with "
                             "--report-only or --figures (the first) only")
    parser.add_argument("--config", action="append", default=[],
                        help="extra config file(s) after the method file and the profile (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                        help="bundle config override for every run, VALUE in YAML (repeatable)")
    parser.add_argument("--note", default="", help="free text written under the command in RESULTS.md")
    parser.add_argument("--root", default=None,
                        help="output root (default: runs/study/<profile>, or runs/ablation/<profile>)")
    parser.add_argument("--records", default=None,
                        help="the study's record, one JSON per finished run (default: benchmarks/records/<profile>)")
    parser.add_argument("--gpu", action="store_true",
                        help="the paper-size profile of a GPU machine (needs CUDA; no CPU study overlay)")
    parser.add_argument("--budget", action="store_true",
                        help=f"the CPU study at its budget: {BUDGET_PROFILE} over {CPU_PROFILE} (runs under "
                             "runs/study/budget, section accuracy-budget of RESULTS.md)")
    parser.add_argument("--ablation", default=None, metavar="FILE",
                        help="train the variants of FILE with the DSP method and report validation Dice")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="with --ablation: run only these variants of FILE (default: all)")
    parser.add_argument("--report-only", action="store_true", help="no training: tables and plots of finished runs")
    parser.add_argument("--figures", action="store_true",
                        help="no training, no tables: Figures 4 and 5 from the finished runs of the first variant "
                             "and scenario, at the largest ACR and the first seed")
    parser.add_argument("--no-write", action="store_true",
                        help="print the tables, leave RESULTS.md, the plots and the records")
    return parser.parse_args(argv)


def _overrides(pairs) -> dict:
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects ID=VALUE, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def plan_study(args, root: Path, configs_extra: list[str], shared: dict) -> list:
    """The runs of the study: ``(key, folder, configs, acr, seed, overrides)`` with key ``(variant, scenario,
    method, acr, seed)``, in the order ACR, seed, variant, scenario, method (so a partial study is paired early).

    A method that trains on the masked images alone (:func:`masks_only`, e.g. ``unet``) gets the same run in every
    scenario (same split, same masked images): its entries of all scenarios share the ``mixed`` folder and settings,
    so it trains once (unless ``shared`` sets ``weak_types`` or ``training_types``).

    Raises:
        SystemExit: for a method without a file in configs/methods.
    """
    plan = []
    for method in args.methods:
        if not (REPO / "configs" / "methods" / f"{method}.yaml").exists():
            raise SystemExit(f"unknown method {method!r}: configs/methods/{method}.yaml does not exist")
    for acr in args.acrs:
        for seed in args.seeds:
            for variant in args.variant:
                for scenario in args.scenarios:
                    for method in ordered_methods(args.methods):
                        runs_in = scenario_folder(scenario, method, shared)
                        plan.append(((variant, scenario, method, acr, seed),
                                     run_dir(root, variant, runs_in, method, acr, seed),
                                     ["bundle/configs/train.yaml", f"configs/methods/{method}.yaml", *configs_extra],
                                     acr, seed, run_overrides(runs_in, method, shared)))
    return plan


def plan_ablation(args, root: Path, configs_extra: list[str], shared: dict, variants: dict) -> list:
    """The runs of an ablation: key ``(name, acr, seed)``, the DSP method with each variant's overrides."""
    return [((name, acr, seed), ablation_dir(root, name, acr, seed),
             ["bundle/configs/train.yaml", "configs/methods/dsp.yaml", *configs_extra], acr, seed,
             {**shared, **(variant.get("overrides") or {})})
            for acr in args.acrs for seed in args.seeds for name, variant in variants.items()]


def variant_settings(results: dict, folders: dict, settings: dict) -> str:
    """One line per variant of the results: its config files and overrides, as its runs recorded them.

    Args:
        results: ``{key: result}`` of the study.
        folders: ``{key: run folder}`` (its scenario level names the scenario whose settings the run has).
        settings: ``{key: settings}`` as the run's ``run.json`` or record keeps them (None: not recorded).
    """
    lines = []
    for variant in _variants(results):
        key = next(k for k in results if k[0] == variant)
        recorded = settings.get(key)
        if not isinstance(recorded, dict):
            lines.append(f"- `{variant}`: settings not recorded (no run.json in {folders[key]} and no record)")
            continue
        own = SCENARIOS.get(folders[key].parents[2].name, ({}, ""))[0]  # the scenario of the folder
        shared = {k: v for k, v in (recorded.get("overrides") or {}).items()
                  if k not in own and k != "snapshot_iterations"}
        lines.append(f"- `{variant}`: configs {', '.join(recorded['configs'][2:]) or 'none'} after the "
                     f"method file" + (f"; overrides {shared}" if shared else "; no overrides"))
    return "Variants (settings as recorded in each run's run.json or record):\n\n" + "\n".join(lines) + "\n\n"


def build_figures(args, root: Path, profile: str) -> int:
    """Figures 4 and 5 from finished runs (``--figures``)."""
    import study_figures

    variant, scenario, acr, seed = args.variant[0], args.scenarios[0], max(args.acrs), args.seeds[0]
    shared = _overrides(args.set)
    panels = [(METHOD_LABELS.get(m, m), run_dir(root, variant, scenario_folder(scenario, m, shared), m, acr, seed))
              for m in ordered_methods(args.methods)]
    missing = [str(folder) for _, folder in panels if load_result(folder) is None]
    if missing:
        raise SystemExit(f"--figures needs finished runs; not finished: {missing}")
    paths = figure_paths(profile)
    study_figures.figure4(panels, paths["figure4"],
                          title=f"{SCENARIOS[scenario][1]}, ACR {acr}, seed {seed}, variant {variant}")
    print(f"Figure 4: {paths['figure4']}")
    dsp = run_dir(root, variant, scenario, "dsp", acr, seed)
    if "dsp" in args.methods:
        study_figures.figure5(dsp, paths["figure5"], title=f"DSP, {SCENARIOS[scenario][1]}, ACR {acr}, seed {seed}")
        print(f"Figure 5: {paths['figure5']}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    profile, configs_profile = profile_of(args)
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA GPU; none is visible (leave --gpu out for the CPU study profile)")
    if len(args.variant) > 1 and not (args.report_only or args.figures):
        raise SystemExit("--variant: several names only with --report-only or --figures (a variant's settings are "
                         "the --config / --set of its own command)")
    configs_extra = configs_profile + list(args.config)
    shared = _overrides(args.set)
    kind = "ablation" if args.ablation else "study"
    root = Path(args.root) if args.root else REPO / "runs" / kind / profile
    if args.figures:
        return build_figures(args, root, profile)
    variants = load_variants(args.ablation) if args.ablation else None
    if variants and args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            raise SystemExit(f"--variants: {unknown} not in {args.ablation} (it has {list(variants)})")
        variants = {name: variant for name, variant in variants.items() if name in args.variants}
    plan = (plan_ablation(args, root, configs_extra, shared, variants) if variants
            else plan_study(args, root, configs_extra, shared))

    records = Path(args.records) if args.records else REPO / "benchmarks" / "records" / profile
    results, folders, settings, supports = {}, {}, {}, {}
    started = time.perf_counter()
    for index, (key, folder, configs, acr, seed, overrides) in enumerate(plan, 1):
        label = f"[{index}/{len(plan)}] {' '.join(str(part) for part in key[:-2])} ACR {acr} seed {seed}"
        outcome = {"status": "skipped"}
        record = None if variants else read_record(record_file(records, root, folder))
        if not args.report_only:
            if record is not None:
                check_recorded(record.get("settings"), run_settings(configs, acr, seed, overrides),
                               record_file(records, root, folder))
            elif load_result(folder) is None:
                print(f"{label}: training in {folder} ...", flush=True)
            if record is None:
                outcome = execute(folder, configs, acr, seed, overrides)
        result = load_result(folder)
        if result is not None and not variants and (record is None or record["result"] != result):
            if record is not None:
                print(f"{label}: the run folder's result replaces the record's (test "
                      f"{100 * record['result']['test']:.2f} -> {100 * result['test']:.2f} Dice)", flush=True)
            record = make_record(folder)
            if not args.no_write:
                write_json(record_file(records, root, folder), record)
        elif result is None and record is not None:
            result = dict(record["result"], **({"recovered": record["recovered"]} if record.get("recovered") else {}))
        if result is None:
            print(f"{label}: no finished result", flush=True)
            continue
        results[key], folders[key] = result, folder
        if record is not None:
            settings[key] = record.get("settings")
            if record.get("test_support") and seed not in supports:
                supports[seed] = record["test_support"]
        timing = "" if outcome["status"] == "skipped" else f", {outcome['total_s']:.0f} s"
        val = "-" if result.get("val") is None else f"{100 * result['val']:.1f}"
        print(f"{label}: val {val}, test {100 * result['test']:.1f} Dice "
              f"({'done before' if outcome['status'] == 'skipped' else 'ran'}{timing}; "
              f"elapsed {time.perf_counter() - started:.0f} s)", flush=True)

    if not results:
        print("nothing finished yet: no tables written")
        return 0
    command = (f"Command (resumable; `--report-only` rebuilds the tables from finished runs): "
               f"`{reproduce_command()}`\n\n" + (f"{args.note}\n\n" if args.note else ""))
    if variants:
        header = (
            f"Machine: {common.machine()}. Profile: {profile} "
            f"({'bundle GPU sizes' if args.gpu else ' + '.join(configs_profile)}); configs after the method file: "
            f"{', '.join(configs_extra) or 'none'}" + (f"; overrides {shared}" if shared else "") + ".\n\n" + command
        )
        markdown = (
            f"## Ablation `{Path(args.ablation).stem}` (validation mean Dice, %)\n\n" + header
            + "Every variant is configs/methods/dsp.yaml with the listed bundle overrides (`lambda_dsp=0` makes it"
            " FixMatch + PLF); settings are chosen on the validation"
            " split (best validation mean Dice over the run), never on the test split. Δ is the per-seed difference"
            " to the reference, mean ± std over seeds.\n\n"
            + ablation_table(results, variants) + "\n"
        )
        print(markdown)
        if not args.no_write:
            common.write_section(Path(args.ablation).stem, markdown)
        return 0
    header = (f"Machine: {common.machine()}. Profile: {profile} "
              f"({'bundle GPU sizes' if args.gpu else ' + '.join(configs_profile)}).\n\n" + command
              + variant_settings(results, folders, settings))
    scenarios = [s for s in SCENARIOS if any(k[1] == s for k in results)]
    plots = {s: plot_path(s, profile).name for s in scenarios}
    figures = {name: path.name for name, path in figure_paths(profile).items() if path.exists()}
    add_supported_means(results, supports)
    archive = records / "recovered_tables.md"
    markdown = report(results, profile, header, plots, figures, supports,
                      archive.read_text() if archive.is_file() else None)
    print(markdown)
    if not args.no_write:
        for scenario in scenarios:
            plot(results, scenario, plot_path(scenario, profile),
                 f"synthetic FIB-SEM, {SCENARIOS[scenario][1]}, {profile} profile, mean ± std over seeds")
        common.write_section(f"accuracy-{profile}", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
