"""dsp_monai.ops, .annotations and .losses import and compute without MONAI (architecture: the loss layer needs torch,
ops and annotations only; the GPU machines have no MONAI). Only the CE + Dice supervised term needs it, when asked for."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys
    import torch
    import dsp_monai.annotations, dsp_monai.losses, dsp_monai.ops
    from dsp_monai.losses import MaskCrossEntropy
    assert not [name for name in sys.modules if name == "monai" or name.startswith("monai.")]
    term = MaskCrossEntropy(loss="ce")
    print("ce ok")
    try:
        MaskCrossEntropy(loss="ce_dice")
    except ImportError as error:
        print("ce_dice:", error)
""")


def test_ops_annotations_and_losses_need_no_monai(tmp_path):
    hidden = tmp_path / "hide" / "monai"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("MONAI is hidden by this test")\n')
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT,
                           env={"PYTHONPATH": f"{hidden.parent}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == ["ce ok", "ce_dice: MONAI is hidden by this test"]
