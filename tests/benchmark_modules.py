"""One way for tests to import a script of ``benchmarks/`` (not a package): by file, with ``benchmarks/`` on the path
while it loads so that its own imports of sibling scripts (``common``, ``bench_accuracy``) resolve."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, freshly executed."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
