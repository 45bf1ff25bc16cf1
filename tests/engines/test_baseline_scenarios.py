"""Every method file trains in every scenario of the paper's comparison: masks + tags, + boxes, + points, and
semi-supervised (no weak labels); the mixed scenario is the bundle's default (tests/bundle/test_methods.py). A method
given a type it cannot use leaves it out or ignores it, and says so once in the log."""

import logging
import math

import pytest

from test_method_regression import ROOT, first_iterations, tiny_datalist  # noqa: F401  (a pytest fixture)

METHODS = sorted(p.stem for p in (ROOT / "configs" / "methods").glob("*.yaml"))
SCENARIOS = {"tags": ["tags"], "boxes": ["boxes"], "points": ["points"], "semi": []}

# the annotation types each method trains on (None: every type, unusable ones ignored by its terms)
TRAINING_TYPES = {"unet": {"mask"}, "cls_branch": {"mask", "tags"}, "box_projection": {"mask", "boxes"},
                  "euclidean_branch": {"mask", "points"}, "geodesic_branch": {"mask", "points"}}
# methods whose terms ignore tags, boxes and points (and log it once)
IGNORING = {"pseudo_label", "fixmatch"}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_in_the_scenario(tiny_datalist, tmp_path, caplog, method, scenario):  # noqa: F811
    weak = SCENARIOS[scenario]
    with caplog.at_level(logging.INFO, logger="dsp_monai"):
        records = first_iterations(tiny_datalist, tmp_path, method, {"weak_types": weak})
    assert records and all(math.isfinite(r["loss"]) for r in records)
    messages = [r.getMessage() for r in caplog.records]
    in_play = {"mask", *weak} if weak else {"mask", "none"}
    kept = TRAINING_TYPES.get(method)
    if kept is not None and in_play - kept:
        dropped = sorted(in_play - kept)
        assert any(m.startswith("training_types") and str(dropped) in m for m in messages), messages
    if method in IGNORING and weak:
        ignored = [m for m in messages if m.endswith("does not learn from " + weak[0] + ": it ignores them")]
        assert len(ignored) == 1, messages
