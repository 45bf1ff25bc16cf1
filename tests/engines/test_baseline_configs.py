"""The baselines' method files as the bundle reads them: their networks and the settings the paper fixes (FixMatch's
CutOut count and threshold)."""

from pathlib import Path

import pytest
from monai.networks.nets import BasicUNet
from monai.transforms import RandCoarseDropoutd

from dsp_monai.losses import OnlinePseudoLabelCrossEntropy
from dsp_monai.networks import DSPBasicUNet
from dsp_monai.transforms.views import WeakStrongViewsd
from test_trainer import method_parser

ROOT = Path(__file__).resolve().parents[2]
METHODS = ROOT / "configs" / "methods"


@pytest.mark.parametrize("method", ["unet", "pseudo_label", "pseudo_label_plf", "fixmatch", "fixmatch_plf"])
def test_the_pseudo_label_baselines_use_the_plain_unet(method):
    network = method_parser(METHODS / f"{method}.yaml").get_parsed_content("network")
    assert type(network) is BasicUNet


def test_dsp_keeps_its_network():
    assert isinstance(method_parser(METHODS / "dsp.yaml").get_parsed_content("network"), DSPBasicUNet)


def test_fixmatch_strong_view_has_nine_cutouts_of_32_pixels_at_probability_one_half():
    # A fixed intensity range, so that the chain is built without preparing the experiment on the default data.
    parser = method_parser(METHODS / "fixmatch.yaml", **{"train#preprocessing#intensity_range": [0.0, 255.0]})
    chain = parser.get_parsed_content("train#preprocessing").transforms
    views = [t for t in chain if isinstance(t, WeakStrongViewsd)]
    assert len(views) == 1
    cutouts = [t for t in views[0].strong.transforms if isinstance(t, RandCoarseDropoutd)]
    assert len(cutouts) == 9
    assert all(t.prob == 0.5 and t.dropper.spatial_size == 32 and t.dropper.holes == 1 for t in cutouts)


def test_fixmatch_threshold_defaults_to_zero_and_follows_the_override():
    term = method_parser(METHODS / "fixmatch.yaml").get_parsed_content("loss_terms#fixmatch#term")
    assert isinstance(term, OnlinePseudoLabelCrossEntropy)
    assert (term.threshold, term.filtered, term.source, term.target) == (0.0, False, "weak", "strong")
    term = method_parser(METHODS / "fixmatch.yaml", pseudo_label_threshold=0.95).get_parsed_content(
        "loss_terms#fixmatch#term")
    assert term.threshold == 0.95
