"""The build report of the compiled library (``dsp_monai._C.BUILD_INFO``, read by ``python -m dsp_monai.info`` and the
GPU check) and the architecture list setup.py compiles into it."""

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from dsp_monai import _C
from dsp_monai.ops._library import build_info

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


def test_build_info_is_the_json_of_the_module_attribute():
    info = build_info()
    assert info == json.loads(_C.BUILD_INFO)
    assert set(info) == {"cpu", "cuda", "cuda_version", "cuda_archs", "openmp", "torch_abi"}
    assert info["cpu"] is True
    assert info["torch_abi"] == int(torch.compiled_with_cxx11_abi())
    if info["cuda"]:
        assert re.fullmatch(r"\d+\.\d", info["cuda_version"])
        assert info["cuda_archs"] and all(re.fullmatch(r"\d+\.\d", arch) for arch in info["cuda_archs"])
    else:
        assert info["cuda_version"] is None and info["cuda_archs"] == []


@pytest.fixture(scope="module")
def arch_digits():
    """setup.py's ``_arch_digits``, compiled alone (importing setup.py would run setup())."""
    tree = ast.parse(SETUP.read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "_arch_digits")
    namespace = {"re": re, "sys": sys}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(SETUP), "exec"), namespace)
    return namespace["_arch_digits"]


@pytest.mark.parametrize("arch_list, expected", [
    ("8.0;9.0", "80,90"),
    ("9.0a", "90"),  # what the GPU machine's image sets (Hopper's architecture-specific features)
    (" 8.0 9.0+PTX ", "80,90"),
    ("8.6;10.0f;12.0a+PTX", "86,100,120"),
])
def test_arch_digits_keeps_major_and_minor_only(arch_digits, arch_list, expected):
    assert arch_digits(arch_list) == expected


def test_arch_digits_refuses_an_entry_that_is_no_architecture(arch_digits):
    with pytest.raises(SystemExit, match=r"TORCH_CUDA_ARCH_LIST entry 'sm_90' is not of the form MAJOR.MINOR"):
        arch_digits("8.0;sm_90")
