"""The app's --conf settings and its view of the bundle (dsp_monai.label.settings); no MONAI Label needed."""

import json

import pytest

from dsp_monai.label.settings import DEFAULT_CONF, AppSettings


def test_defaults_take_the_bundle_metadata_classes(tmp_path):
    settings = AppSettings.from_conf(str(tmp_path / "app"), {})
    with open(f"{settings.bundle_root}/configs/metadata.json") as handle:
        metadata = json.load(handle)
    channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert settings.class_names == [channel_def[str(i)] for i in range(len(channel_def))]
    assert settings.model_path == str(tmp_path / "app" / "model" / "model.pt")
    assert settings.values == DEFAULT_CONF and settings.overrides == {}


def test_labels_and_overrides_reach_the_network(tmp_path):
    conf = {"labels": '["bg", "cell"]', "overrides": json.dumps({"sizes#cpu#features": [4, 4, 8, 8, 16, 4],
                                                                   "sizes#cpu#embedding_dim": 6, "num_prototypes": 3})}
    settings = AppSettings.from_conf(str(tmp_path), conf)
    assert settings.class_names == ["bg", "cell"]
    network = settings.bundle().network()
    assert tuple(network.prototypes.shape) == (2, 3, 6)
    assert AppSettings.from_conf(str(tmp_path), {"labels": " bg , cell,er "}).class_names == ["bg", "cell", "er"]


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"lables": "a,b"}, r"--conf lables: unknown key; the app's keys are \['bundle', 'labels'"),
        ({"overrides": "{max_epochs: 3"}, r"--conf overrides: not valid JSON"),
        ({"overrides": "[1, 2]"}, r"--conf overrides: expected a JSON object of bundle ids"),
        ({"labels": "a,a"}, r"--conf labels: expected unique non-empty class names"),
        ({"val_split": "1.5"}, r"--conf val_split: expected a share in \[0, 1\)"),
        ({"refine_steps": "ten"}, r"--conf refine_steps: expected an integer, got 'ten'"),
        ({"refine_time_limit": "soon"}, r"--conf refine_time_limit: expected a number, got 'soon'"),
        ({"dimension": "4"}, r"--conf dimension: expected 2 \(images\) or 3 \(volumes\), got '4'"),
        ({"dimension": "3d"}, r"--conf dimension: expected an integer, got '3d'"),
        ({"bundle": "/nonexistent"}, r"--conf bundle: /nonexistent holds no configs/train.yaml"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, conf, message):
    with pytest.raises(ValueError, match=message):
        AppSettings.from_conf(str(tmp_path), conf)
