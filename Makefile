# One entry point for the book.  `make test` and `make book` each create (or reuse)
# the virtual environment in $(VENV) and install everything they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On machines without torch we install the CPU build that lies on local disk here;
# override TORCH_SPEC to pick another build.  Torch is only a lower bound in pyproject.toml.
TORCH_SPEC ?= torch==2.13.0
# Reference implementation for the fidelity tests (tokenizer, ResNet).  Installed without its
# dependencies: it would pull torchvision, and the tests load only its torch-only modules.
REFERENCE_SPEC ?= open_clip_torch==3.3.0
STAMP := $(VENV)/.installed-stamp

.PHONY: install test unit notebooks book benchmark clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps "$(REFERENCE_SPEC)"
	touch $(STAMP)

install: $(STAMP)

## Unit tests, then every notebook under chapters/ through nbval.
test: unit notebooks

unit: $(STAMP)
	$(PY) -m pytest tests

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider chapters

## Build the HTML book; every notebook is executed, any error or Sphinx warning fails the build.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo "Book built: $(abspath _build/html/index.html)"

benchmark: $(STAMP)
	$(PY) benchmarks/notebook_times.py
	$(PY) benchmarks/demo_training.py
	$(PY) benchmarks/import_time.py

clean:
	rm -rf _build
