"""Writing small text files so that a reader never sees half of one.

A run killed while it writes ``metrics.json``, a split file or a datalist must leave either the previous file or the
new one, since the accuracy runner resumes by reading them back. Each write goes to a temporary file in the same
folder (named after the target and the process), then :func:`os.replace` renames it over the target, an atomic step
on POSIX and Windows file systems. Checkpoints have their own writer (``dsp_monai.engines.checkpoints``), which also
flushes to disk and keeps the previous checkpoint.
"""

from __future__ import annotations

import json
import os

__all__ = ["write_json", "write_text"]


def write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename; parent folders are created. Returns
    the path as a string. A temporary file is removed when the write fails."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def write_json(path: str | os.PathLike, content) -> str:
    """Write ``content`` as indented JSON with a final newline, as :func:`write_text` does. A value JSON cannot
    store raises ``TypeError`` before anything is written."""
    return write_text(path, json.dumps(content, indent=1) + "\n")
