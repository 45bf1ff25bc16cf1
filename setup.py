"""Build of dsp_monai and its compiled extension ``dsp_monai._C``.

CPU kernels are always built. CUDA kernels are built when ``FORCE_CUDA=1`` or a GPU is visible; on machines
without a GPU, ``TORCH_CUDA_ARCH_LIST`` defaults to ``DEFAULT_CUDA_ARCHS`` and ``CUDA_HOME`` is found from ``nvcc``
(following wrapper scripts). ``FORCE_CUDA=0`` forces a CPU-only build. ``python -m dsp_monai.info`` reports
what was built.
"""

import glob
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _cuda_home_from_nvcc():
    """The toolkit root named by ``nvcc`` on PATH, following symlinks and one-line wrapper scripts."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    nvcc = os.path.realpath(nvcc)
    candidates = [os.path.dirname(os.path.dirname(nvcc))]
    try:
        with open(nvcc, "rb") as handle:
            head = handle.read(4096)
        if head.startswith(b"#!"):
            candidates += [
                os.path.dirname(os.path.dirname(path.decode()))
                for path in re.findall(rb"(/[^\s\"']+/bin/nvcc)\b", head)
            ]
    except OSError:
        pass
    for root in candidates:
        if os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return root
    return None


def _want_cuda():
    force = os.environ.get("FORCE_CUDA")
    if force is not None and force not in ("0", "1"):
        sys.exit(f"FORCE_CUDA must be 0 or 1, got {force!r}")
    if force == "1":
        return True
    if force == "0":
        return False
    import torch

    return torch.cuda.is_available()


WITH_CUDA = _want_cuda()
if WITH_CUDA:
    if not os.environ.get("CUDA_HOME"):
        found = _cuda_home_from_nvcc()
        if found is None:
            sys.exit(
                "A CUDA build was requested (FORCE_CUDA=1 or a visible GPU) but no CUDA toolkit was found: "
                "set CUDA_HOME to the folder whose include/ holds cuda_runtime.h, or put nvcc on PATH."
            )
        os.environ["CUDA_HOME"] = found
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS

# torch.utils.cpp_extension reads CUDA_HOME when it is imported, so import it only now.
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _nvidia_wheel_includes():
    """Header folders of the CUDA libraries shipped as pip wheels with torch (cusparse.h and friends)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    folders = []
    for base in spec.submodule_search_locations:
        folders += sorted(glob.glob(os.path.join(base, "*", "include")))
    return [f for f in folders if os.path.isdir(f)]


def _arch_digits(arch_list):
    """'8.0;9.0a;10.0f+PTX' -> '80,90,100' for the compiled-in build report: the integer major and minor of each
    entry, without a feature suffix ('a', 'f') or '+PTX', which would not be integer literals in C++."""
    digits = []
    for arch in filter(None, re.split(r"[;\s]+", arch_list.strip())):
        match = re.match(r"(\d+)\.(\d)", arch)
        if match is None:
            sys.exit(f"TORCH_CUDA_ARCH_LIST entry {arch!r} is not of the form MAJOR.MINOR[a|f][+PTX]")
        digits.append(match.group(1) + match.group(2))
    return ",".join(digits)


def _extension():
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    include_dirs = [os.path.join(ROOT, "csrc")]
    define_macros = []
    cxx_flags = ["-O3", "-fno-math-errno", "-Wno-psabi"]
    if sys.platform.startswith("linux"):
        cxx_flags.append("-fopenmp")
    extra_link_args = ["-fopenmp"] if sys.platform.startswith("linux") else []
    if WITH_CUDA:
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
        include_dirs += _nvidia_wheel_includes()
        define_macros.append(("WITH_CUDA", None))
        # Only the C++ compiler sees the arch list: nvcc would split the comma-separated value.
        cxx_flags.append("-DDSP_MONAI_CUDA_ARCHS=" + _arch_digits(os.environ["TORCH_CUDA_ARCH_LIST"]))
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            "dsp_monai._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=extra_link_args,
        )
    return CppExtension(
        "dsp_monai._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link_args,
    )


def _label_requirements():
    """The MONAI Label extra's packages (requirements-label.txt); monailabel itself is installed with --no-deps."""
    with open(os.path.join(ROOT, "requirements-label.txt")) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


setup(
    name="dsp_monai",
    version="0.1.0",
    description="Decoupled Semantic Prototypes for segmentation from mixed annotations, with fused C++/CUDA operators",
    packages=find_packages(include=["dsp_monai", "dsp_monai.*"]),
    package_data={"dsp_monai": ["py.typed"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-image>=0.22",
        "monai>=1.4",
        "pytorch-ignite>=0.4.11",
        "pyyaml>=6",
        "tqdm>=4.66",
        "tensorboard>=2.15",
        "matplotlib>=3.8",
        "pillow>=10",
        "tifffile>=2024.1",
        "zarr>=2.18",
        "nibabel>=5.2",
    ],
    extras_require={"itk": ["itk>=5.4", "pynrrd>=1.0"], "test": ["pytest>=8"], "label": _label_requirements()},
    zip_safe=False,
)
