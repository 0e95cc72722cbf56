# The README's two commands: `make repro` (the pipeline) and `make test` (the tests).
# Both create the virtual environment .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test venv

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	ruff check .
	ruff format --check .
	python -m pytest

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --constraint constraints.txt --editable '.[s3,test]'
	touch $@
