"""Faults for the crash-safety tests of the bundle, injected from outside the library.

- :class:`DSPLossWithNaN`: a DSPLoss whose box part turns NaN from a given call on (a config override
  ``--dsp_loss#_target_ fault_injection.DSPLossWithNaN --dsp_loss#nan_from_call N``).
- ``python fault_injection.py EPOCH <monai.bundle arguments>``: runs ``python -m monai.bundle <arguments>`` and
  kills itself with SIGKILL while writing the checkpoint of epoch EPOCH, once half of its bytes are in the
  temporary file.

This folder must be on PYTHONPATH of the subprocess.
"""

import io
import os
import runpy
import signal
import sys

from dsp_monai.engines.checkpoints import AtomicDiskSaver
from dsp_monai.losses import DSPLoss


class DSPLossWithNaN(DSPLoss):
    """DSPLoss whose ``box`` part (and so ``total``) is NaN from its ``nan_from_call``-th call on."""

    def __init__(self, nan_from_call: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_from_call, self.calls = int(nan_from_call), 0

    def from_scores(self, *args, **kwargs):
        out = super().from_scores(*args, **kwargs)
        self.calls += 1
        if self.calls < self.nan_from_call:
            return out
        nan = out["box"] * float("nan")
        return {**out, "box": out["box"] + nan, "total": out["total"] + nan}


def _kill_while_writing(epoch: int):
    write, serialize = AtomicDiskSaver._write, AtomicDiskSaver._serialize
    target = {"now": False}

    def marked_write(self, checkpoint, path):
        target["now"] = path.name == f"checkpoint_epoch={epoch}.pt"
        write(self, checkpoint, path)

    def half_then_die(self, checkpoint, stream):
        if not target["now"]:
            return serialize(self, checkpoint, stream)
        buffer = io.BytesIO()
        serialize(self, checkpoint, buffer)
        stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    AtomicDiskSaver._write, AtomicDiskSaver._serialize = marked_write, half_then_die


if __name__ == "__main__":
    _kill_while_writing(int(sys.argv[1]))
    sys.argv = ["monai.bundle", *sys.argv[2:]]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
