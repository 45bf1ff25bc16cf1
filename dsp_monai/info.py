"""``python -m dsp_monai.info``: versions, compiled kernels and visible GPUs."""

import platform
import sys

import torch

import dsp_monai


def describe() -> str:
    """A multi-line report of the installation."""
    lines = [
        f"dsp_monai     {dsp_monai.__version__}",
        f"python        {platform.python_version()}",
        f"torch         {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
    ]
    try:
        from dsp_monai.ops._library import build_info

        info = build_info()
    except ImportError as error:
        lines.append(f"kernels       NOT BUILT: {error}")
    else:
        lines.append("CPU kernels   yes" + (" (OpenMP)" if info.get("openmp") else " (no OpenMP: single-threaded)"))
        if info["cuda"]:
            lines.append(f"CUDA kernels  yes (CUDA {info['cuda_version']}, arch {';'.join(info['cuda_archs'])})")
        else:
            lines.append("CUDA kernels  no (rebuild with FORCE_CUDA=1 to include them)")
        ops = sorted(
            name.split("::", 1)[1]
            for name in torch._C._dispatch_get_all_op_names()
            if name.startswith("dsp_monai::") and not name.startswith("dsp_monai::_")
        )
        lines.append(f"operators     {', '.join(ops)}")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"GPU visible   yes: {', '.join(names)}")
    else:
        lines.append("GPU visible   no")
    try:
        import monai

        lines.append(f"monai         {monai.__version__}")
    except ImportError:
        lines.append("monai         not installed")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(describe() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
