# stenopod: `make demo` and `make test` work on a fresh clone; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup.stamp
SETUP_INPUTS := pyproject.toml requirements-dev.txt builder/requirements-worker.txt builder/constraints.txt

.PHONY: setup test lint demo bench eval schema freeze clean

setup: $(STAMP)

# Idempotent: re-runs only when a requirements file changed; a no-op otherwise.
$(STAMP): $(SETUP_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --upgrade pip
	# torch first and pinned: it takes the local CPU wheel; a loose torch would pull a CUDA build.
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -r requirements-dev.txt -c builder/constraints.txt
	$(PIP) install -q --disable-pip-version-check --no-deps -e .
	# The worker (handler/) is not in the SDK's wheel: this checkout's root goes on the venv's path,
	# so local workers (`python -m handler`) start from any folder, as in the image (PYTHONPATH).
	$(PY) -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'stenopod-worker.pth').write_text('$(CURDIR)\n')"
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

demo: setup
	$(VENV)/bin/stenopod transcribe examples/audio --output examples/out --formats json,txt,srt,vtt

# Accuracy and user-visible speed against the plain faster-whisper loop and BatchedInferencePipeline.
eval: setup
	$(PY) -m bench.eval

# eval, then whether the worker's own pipeline keeps a Parakeet-speed engine busy (bench/gpu_feed.py).
bench: eval
	$(PY) -m bench.gpu_feed

schema: setup
	$(VENV)/bin/stenopod schema --all > docs/schema.json

freeze: setup
	$(PIP) freeze --exclude-editable | grep -viE '^(torch|actionlint)' > builder/constraints.txt.new
	mv builder/constraints.txt.new builder/constraints.txt

clean:
	rm -rf $(VENV) examples/out .pytest_cache .ruff_cache
