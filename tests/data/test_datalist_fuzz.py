"""Datalist fuzzing: random malformed JSON datalists never fail with anything but DatalistError (or a subclass),
and never yield an experiment. A few examples here; benchmarks/fuzz_datalist.py runs thousands."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings

from dsp_monai.data.datalist import DatalistError, read_datalist
from dsp_monai.data.experiment import prepare_experiment

from datalist_strategies import documents, encode, valid_datalist, write_images

_names = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    write_images(folder)
    return folder


def check_document(folder, document: bytes):
    """Reads ``document`` as a datalist and prepares an experiment from it; returns the experiment or the
    DatalistError. Any other exception fails the caller."""
    path = folder / f"datalist_{next(_names)}.json"
    path.write_bytes(document)
    try:
        read_datalist(path, check_contents=True)
        return prepare_experiment(str(path), str(folder / f"run_{path.stem}"), acr=0, spatial_dims=2,
                                  intensity_range=[0, 255])
    except DatalistError as error:
        assert str(error).startswith(str(path)) or str(error).startswith("the ") or "intensity_range" in str(error)
        return error


def test_the_valid_datalist_prepares_an_experiment(folder):
    result = check_document(folder, encode(valid_datalist()))
    assert not isinstance(result, DatalistError), result
    assert [item["annotation_type"] for item in result["training"]] == ["mask", "tags"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(document=documents)
def test_malformed_datalists_raise_only_datalist_errors(folder, document):
    check_document(folder, document)
