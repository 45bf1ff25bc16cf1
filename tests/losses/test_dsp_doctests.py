"""The Examples in the docstrings of the annotations, losses and networks modules run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "dsp_monai.annotations.collate",
    "dsp_monai.losses.dsp",
    "dsp_monai.losses.pseudo_labels",
    "dsp_monai.networks.classification",
    "dsp_monai.networks.dsp",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
