# One command per job; every target builds the environment first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DVC := $(VENV)/bin/dvc
# DVC stages run `python ...`: the venv's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEBIAN_PACKAGES := espeak-ng ffmpeg flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
  festvox-rablpc16k mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 festvox-us1 festvox-us2 \
  festvox-us3 festvox-en1 libttspico-utils rhvoice rhvoice-english \
  $(addprefix mbrola-,af1 de1 de2 de3 de4 de5 de6 fr1 fr4 gr2 hu1 nl2 pl1 ro1 sw1 sw2)
# festvox-rablpc16k is in Debian's contrib, the MBROLA voices, pico and RHVoice in non-free
APT_CONTRIB_NON_FREE := /etc/apt/sources.list.d/kws-contrib-non-free.sources
# torch==2.13.0+cpu comes from PyTorch's CPU index, unless pip's configured wheel folder has it
TORCH_INDEX ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*),,https://download.pytorch.org/whl/cpu)

.PHONY: setup debian-packages repro bins sweep test bench hls4ml-check real-speech-check lock clean

setup: debian-packages $(VENV)/.installed

debian-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:" $$missing; \
	    if ! grep -rqsE '^(Components:|deb ).*\bnon-free(\s|$$)' /etc/apt/sources.list /etc/apt/sources.list.d/; then \
	      echo "enabling Debian's contrib and non-free components in $(APT_CONTRIB_NON_FREE)"; \
	      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	        "$$(. /etc/os-release && echo $$VERSION_CODENAME)" > $(APT_CONTRIB_NON_FREE); \
	    fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages; enable Debian's contrib and non-free components and run: sudo apt-get install -y" $$missing; exit 1; \
	  fi; \
	fi

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

# Re-resolve requirements.in into the lock file (maintainers only).
lock: $(VENV)/.installed
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r requirements.in
	$(PY) -m pip freeze --exclude-editable > requirements.lock

repro: setup
	$(DVC) repro

# The BIN files and the optional hls4ml stage that reads them (only a note unless hls4ml.enabled):
# `dvc repro bins` alone would leave that stage's deps changed in `dvc status`.
bins: setup
	$(DVC) repro bins hls4ml

# A grid of DVC experiments, queued and run by `dvc queue start`, then compared (the wait fails,
# rather than hangs, without a queue worker, and after SWEEP_TIMEOUT seconds). The data stages'
# outs are not in DVC's cache (cache: false), so they are built here once and each experiment's
# temporary copy of the repo gets a copy of them (-C).
SWEEP ?= -S 'model.weight_bit_width=2,3,4' -S 'model.hidden_layers=[128,128,128],[256,256,256]'
SWEEP_DATA := data/synthetic_corpus data/dataset data/features
SWEEP_TIMEOUT ?= 21600
sweep: setup
	$(DVC) repro features
	$(DVC) exp run --queue $(addprefix -C ,$(SWEEP_DATA)) $(SWEEP)
	$(DVC) queue start
	$(PY) scripts/compare_experiments.py --wait --timeout $(SWEEP_TIMEOUT)

# hls4ml's C++ emulation of the exported model against qonnx, on the BIN files (g++, no Vivado).
# Its metrics go to metrics/hls4ml_check.json (git-ignored): metrics/hls4ml.json is the hls4ml
# stage's out, which this run must not leave changed in `dvc status`.
hls4ml-check: setup
	$(DVC) repro bins hls4ml
	$(PY) scripts/hls4ml_check.py --params params.yaml --enabled true --model training_checkpoint/QONNX_model.onnx --bin_file_path kws_bin_files --metrics metrics/hls4ml_check.json

# The exported model on 200 real Speech Commands clips (the FINN fixture's BIN files).
FINN_FIXTURE ?= $(or $(KWS_FINN_FIXTURE),../shared/fixtures/finn_kws_w3a3)
real-speech-check: setup
	$(DVC) repro export
	$(PY) scripts/check_real_speech.py --bin_dir $(FINN_FIXTURE)/kws_bin_files --fixture_model $(FINN_FIXTURE)/QONNX_model.onnx

test: setup
	$(PY) -m pytest -q

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
