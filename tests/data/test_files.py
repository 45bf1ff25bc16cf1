"""dsp_monai.data.files: a write either lands whole or leaves the previous file and no temporary behind."""

import json
import os

import pytest

from dsp_monai.data.files import write_json, write_text


def test_write_json_creates_folders_and_reads_back_with_a_final_newline(tmp_path):
    path = tmp_path / "a" / "b" / "metrics.json"
    returned = write_json(path, {"finished": True, "best": [0.5, 3]})
    assert returned == str(path)
    assert path.read_text(encoding="utf-8") == '{\n "finished": true,\n "best": [\n  0.5,\n  3\n ]\n}\n'
    assert json.loads(path.read_text()) == {"finished": True, "best": [0.5, 3]}
    assert os.listdir(path.parent) == ["metrics.json"]


def test_a_value_json_cannot_store_leaves_the_previous_file(tmp_path):
    path = tmp_path / "split.json"
    write_json(path, {"version": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"version": 2, "array": object()})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["split.json"]


def test_a_write_cut_short_removes_its_temporary_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "main.py"
    write_text(path, "old\n")

    def interrupted(source, target):
        assert open(source, encoding="utf-8").read() == "new\n"  # the whole text is in the temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["main.py"]
