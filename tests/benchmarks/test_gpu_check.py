"""The environment description of benchmarks/gpu_check.py (the GPU verification report): the extension's build report
is read in a child process, so a crash of the extension is reported instead of ending the description."""

import subprocess
import sys
from pathlib import Path

from benchmark_modules import load_benchmark


def test_loaded_libraries_finds_the_libstdcxx_this_process_loaded():
    gpu_check = load_benchmark("gpu_check")
    found = gpu_check._loaded_libraries("libstdc++")
    assert found, "torch loads libstdc++, so the process maps it"
    assert all(Path(path).is_file() and Path(path).name.startswith("libstdc++") for path in found)
    assert gpu_check._loaded_libraries("no-such-library-name") == []


def test_extension_description_reads_the_build_report_of_the_loaded_binary():
    gpu_check = load_benchmark("gpu_check")
    from dsp_monai.ops._library import build_info

    info = build_info()
    expected = (f"CUDA kernels {'yes, arch ' + ';'.join(info['cuda_archs']) if info['cuda'] else 'no'}, "
                f"OpenMP {'yes' if info['openmp'] else 'no'}")
    assert gpu_check._extension_description() == expected


def test_extension_description_reports_a_crash_and_a_failed_import(monkeypatch):
    gpu_check = load_benchmark("gpu_check")
    answers = iter([subprocess.CompletedProcess([], -11, "", ""),
                    subprocess.CompletedProcess([], 1, "", "Traceback ...\nImportError: dsp_monai._C is not built\n")])
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *args, **kwargs: next(answers))
    assert gpu_check._extension_description() == "importing it or reading its build report CRASHED (signal 11)"
    assert gpu_check._extension_description() == "could not be loaded (ImportError: dsp_monai._C is not built)"


def test_environment_names_compiler_libstdcxx_and_extension():
    gpu_check = load_benchmark("gpu_check")
    text = gpu_check.environment()
    lines = {line.split(":")[0] for line in text.splitlines()}
    assert {"- C++ compiler (CXX or c++)", "- libstdc++ loaded with torch", "- dsp_monai._C"} <= lines
    assert f"Python {sys.version.split()[0]}" in text
