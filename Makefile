# The two commands of the README: `make book` (the course's main job) and `make test`.
# Both create .venv when missing and install the project into it.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
NB      ?=

.PHONY: book test export notebooks lab data lint check-export check-pairs unit nbval book-html clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,lab,book]"
	touch $(STAMP)

export: $(STAMP)
	$(BIN)/python tools/nbexport.py

data: $(STAMP)
	$(BIN)/python -c "from spongebob.world import sample_dir; sample_dir()"

notebooks: $(STAMP)
	$(BIN)/python tools/run_notebooks.py $(NB)

book-html: $(STAMP)
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book -W -n --keep-going

book: $(STAMP) data notebooks book-html
	@echo "book: open book/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check-export: $(STAMP)
	$(BIN)/python tools/nbexport.py --check

# jupytext --sync must change nothing (compared with the tree before it ran, so work in progress is fine).
check-pairs: $(STAMP)
	@before=$$(git diff -- notebooks | sha1sum); \
	$(BIN)/jupytext --sync --quiet notebooks/*.ipynb notebooks/solutions/*.ipynb; \
	if [ "$$(git diff -- notebooks | sha1sum)" != "$$before" ]; then \
	  git diff --stat -- notebooks; echo "check-pairs: notebooks and .py pairs were out of sync"; exit 1; \
	else echo "check-pairs: in sync"; fi

unit: $(STAMP)
	$(BIN)/pytest -q tests

nbval: $(STAMP)
	$(BIN)/pytest -q --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

test: lint check-export check-pairs unit nbval book-html

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf book/_build .pytest_cache .ruff_cache
