# One entry point for the book.  `make test` and `make book` each create (or reuse)
# the virtual environment in $(VENV) and install everything they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed only when $(VENV) cannot import torch; override TORCH_SPEC to pick another version.
# Torch is only a lower bound in pyproject.toml.  On Linux, PyPI's torch is the CUDA build (several
# GB): for the CPU build, install it into $(VENV) first from PyTorch's CPU index (README, Set-up).
TORCH_SPEC ?= torch==2.13.0
# Reference implementation for the fidelity tests (tokenizer, ResNet).  Installed without its
# dependencies: it would pull torchvision, and the tests load only its torch-only modules.
REFERENCE_SPEC ?= open_clip_torch==3.3.0
STAMP := $(VENV)/.installed-stamp

.PHONY: install test unit notebooks book book-fresh benchmark clean cjk-fonts browser-deps book-check

$(STAMP): pyproject.toml Makefile tests/test_colab_install.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps "$(REFERENCE_SPEC)"
# The offline Colab simulation of tests/test_colab_install.py and tests/test_wheel.py: Colab's
# preinstalled packages and a wheelhouse, downloaded now because tests download nothing.
	$(PY) tests/test_colab_install.py --prepare $(VENV)/colab-sim
	touch $(STAMP)

install: $(STAMP)

## Unit tests, then every notebook under chapters/ through nbval.
test: unit notebooks

unit: $(STAMP)
	$(PY) -m pytest tests

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider chapters

## Build the HTML book, both editions; any error in a cell or any Sphinx warning fails the build.
## Afresh (every notebook executed) whenever clip_tutorial/, _config.yml, _ext/, the figures' Chinese
## words or the installed packages changed since the last successful build, else only the changed
## pages (tools/build_book.py says which and why).
book: $(STAMP) cjk-fonts
	$(PY) tools/build_book.py

## The same, always afresh.
book-fresh: $(STAMP) cjk-fonts
	$(PY) tools/build_book.py --fresh

## The Chinese edition's figures are drawn with Debian's Noto CJK fonts (installed as root, only
## when missing); the browser check reads the Chinese pages with them too.
cjk-fonts:
	@if ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y fonts-noto-cjk; \
	  else echo "the Chinese edition needs Debian's fonts-noto-cjk: sudo apt-get install fonts-noto-cjk" >&2; \
	    exit 1; fi; fi

## Read the built book (_build/html, from `make book`) in headless Chromium as a reader would:
## every page loads without errors, with its images, maths, widgets, links, launch buttons and
## Chinese glyphs; a screenshot of every page goes to _build/screenshots (browser_tests/).
## browser-deps installs Debian's chromium and CJK fonts (as root, only when missing) and unpacks
## local copies of the CDN scripts the pages load (MathJax, the widget manager) with npm.
BOOK_CHECK_ASSETS ?= $(VENV)/book-check-assets
browser-deps: $(STAMP) cjk-fonts
	@if ! dpkg -s chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else echo "book-check needs Debian's chromium: sudo apt-get install chromium" >&2; \
	    exit 1; fi; fi
	$(PY) browser_tests/book_browser.py install-assets $(BOOK_CHECK_ASSETS)

book-check: browser-deps
	@test -f _build/html/index.html || { echo "no built book in _build/html: run make book first" >&2; exit 1; }
	BOOK_CHECK_HTML=_build/html BOOK_CHECK_ASSETS=$(BOOK_CHECK_ASSETS) $(PY) -m pytest browser_tests -p no:cacheprovider

benchmark: $(STAMP)
	$(PY) benchmarks/notebook_times.py
	$(PY) benchmarks/demo_training.py
	$(PY) benchmarks/import_time.py

clean:
	rm -rf _build
