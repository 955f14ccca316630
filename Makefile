# The two commands of the README: `make book` (the course's main job) and `make test`.
# Both create .venv when missing and install the project into it. Neither writes a tracked file:
# only `make export` and `make notebooks` rewrite the package and the notebooks.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
# Empty: pip's default index (on Linux x86-64 that is the CUDA build of torch with its nvidia-* wheels,
# several GB). TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the small CPU-only wheel.
TORCH_INDEX ?=
NB      ?=

.PHONY: book test export notebooks lab data lint check-export check-pairs unit nbval book-html \
	browser-test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,lab,book]"
	$(BIN)/python tools/vendor_web.py  # the book's MathJax and widget scripts, from npm, once
	touch $(STAMP)

export: $(STAMP)
	$(BIN)/python tools/nbexport.py

data: $(STAMP)
	$(BIN)/python -c "from spongebob.world import sample_dir; sample_dir()"

# The only target that executes notebooks in place (and re-syncs their .py pairs).
notebooks: $(STAMP)
	$(BIN)/python tools/run_notebooks.py $(NB)

# Renders the outputs committed in the notebooks; executes nothing (part of `make test`).
book-html: $(STAMP)
	$(BIN)/python tools/vendor_web.py
	$(BIN)/python tools/build_book.py

# Executes every chapter during the build; fresh outputs go into book/_build only.
book: $(STAMP) data
	$(BIN)/python tools/vendor_web.py
	$(BIN)/python tools/build_book.py --execute
	@echo "book: open book/_build/html/index.html"

# Headless Chromium opens every page of the built site (tools/browser_test.py); skipped, with a
# message, where chromium or chromedriver is missing (BROWSER_TEST_REQUIRED=1 makes that a failure).
browser-test: book-html
	$(BIN)/python tools/browser_test.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check-export: $(STAMP)
	$(BIN)/python tools/nbexport.py --check

# Read-only: compares each notebook's py:percent rendering with its committed .py pair.
check-pairs: $(STAMP)
	$(BIN)/python tools/check_pairs.py

unit: $(STAMP)
	$(BIN)/pytest -q tests

nbval: $(STAMP)
	$(BIN)/pytest -q --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

test: lint check-export check-pairs unit nbval book-html browser-test

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf book/_build .pytest_cache .ruff_cache
