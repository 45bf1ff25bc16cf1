"""The bundle's ``supervised_loss`` switch: one setting of train.yaml that every method's supervised term (the ``ce``
term of train.yaml and of each configs/methods file) reads, CE by default and CE + Dice on request."""

import json
from pathlib import Path

import pytest

from dsp_monai.losses import MaskCrossEntropy
from test_method_regression import FIXTURE, first_iterations, tiny_datalist  # noqa: F401  (a fixture)
from test_trainer import method_parser

ROOT = Path(__file__).resolve().parents[2]
METHOD_FILES = [None, *sorted((ROOT / "configs" / "methods").glob("*.yaml"))]


@pytest.mark.parametrize("method_file", METHOD_FILES, ids=["train.yaml", *[m.stem for m in METHOD_FILES[1:]]])
def test_every_method_supervised_term_follows_the_switch(method_file):
    default = method_parser(method_file).get_parsed_content("loss_terms#ce#term")
    assert isinstance(default, MaskCrossEntropy) and default.loss == "ce" and default.dice is None
    balanced = method_parser(method_file, supervised_loss="ce_dice").get_parsed_content("loss_terms#ce#term")
    assert isinstance(balanced, MaskCrossEntropy) and balanced.loss == "ce_dice" and balanced.dice is not None
    assert balanced.ignore_index == 255


def test_an_unknown_setting_names_the_switch():
    with pytest.raises(RuntimeError) as error:
        method_parser(supervised_loss="dice").get_parsed_content("loss_terms#ce#term")
    cause = error.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == ("MaskCrossEntropy: loss (the bundle's supervised_loss) must be one of ['ce', 'ce_dice']; "
                          "got 'dice'")


def test_ce_dice_training_keeps_the_data_and_the_cross_entropy_of_the_first_iteration(tiny_datalist, tmp_path):
    # Before the first update the network, the batch and hence the CE are those of the recorded CE-only run; the
    # total is the CE plus the Dice part, and the Dice part is a loss in [0, 1].
    records = first_iterations(tiny_datalist, tmp_path / "unet_ce_dice", "unet", {"supervised_loss": "ce_dice"})
    recorded = json.loads(FIXTURE.read_text())["unet"][0]
    first = records[0]
    assert first["ce_ce"] == pytest.approx(recorded["ce"], rel=1e-6, abs=1e-6)
    assert 0.0 < first["ce_dice"] < 1.0
    for record in records:
        assert record["ce"] == pytest.approx(record["ce_ce"] + record["ce_dice"], rel=1e-6)
        assert record["loss"] == pytest.approx(record["ce"], rel=1e-6)
