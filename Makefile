# Set-up and everyday commands. Each target creates the virtual environment it needs (.venv) on first use.
#   make run    train DSP on the default data         make test   the test suite
#   make build  (re)compile the extension            make bench  all benchmarks -> benchmarks/RESULTS.md
#   make label  the optional MONAI Label extra (docs/label.md); `make test` then runs the app's server tests too
# The checkout is put on the environment's path (a .pth file) and the extension is built in place, incrementally.
# FORCE_CUDA=1 compiles the CUDA kernels even without a visible GPU (CI does); FORCE_CUDA=0 forbids them.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
STAMP := $(VENV)/.deps-installed
LABEL_STAMP := $(VENV)/.label-installed
# MONAI Label without its dependencies (they pin numpy < 2); requirements-label.txt lists what it needs.
LABEL_NO_DEPS ?= monailabel==0.8.5 pydicom-seg==0.4.1

.PHONY: run test build bench info clean label

$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'dsp_monai-checkout.pth').write_text('$(CURDIR)\n')"
	touch $(STAMP)

build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace
	$(PY) -m dsp_monai.info

test: build
	$(PY) -m pytest

run: build
	$(PY) -m monai.bundle run training --config_file bundle/configs/train.yaml

bench: build
	$(PY) benchmarks/bench_prototype_logsumexp.py
	$(PY) benchmarks/bench_dsp_loss.py
	$(PY) benchmarks/bench_geodesic.py
	$(PY) benchmarks/bench_data.py

label: $(LABEL_STAMP)

$(LABEL_STAMP): $(STAMP) requirements-label.txt
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -r requirements-label.txt
	$(PY) -m pip install --quiet --no-deps $(LABEL_NO_DEPS)
	touch $(LABEL_STAMP)

info: $(STAMP)
	$(PY) -m dsp_monai.info

clean:
	rm -rf build dsp_monai/_C*.so *.egg-info

# GPU verification on a machine with torch, nvcc and pytest but no MONAI and no internet: builds the extension
# with that machine's torch, runs the cuda-marked tests and the GPU benchmarks, writes GPU_CHECK_OUT/gpu_check.md.
# It uses $(PYTHON) as it is (no virtual environment, nothing installed); without a GPU it is a dry run.
GPU_CHECK_OUT ?= gpu_check
.PHONY: gpu-check
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh $(GPU_CHECK_OUT)
