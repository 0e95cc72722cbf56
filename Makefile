# The README's two commands: `make repro` (the pipeline) and `make test` (the tests).
# Both create the virtual environment .venv on first use and reuse it afterwards.
# `make test`: ruff, then every test but the exhaustive variants, real CIFAR-10 included; it proves
# every guarantee in the README. `make test-full`: the same plus those variants, slower: the
# kill-at-write matrix at every write of every stage (KILL_MATRIX=full) and the tests marked `full`.
# `make vega`: vega, vega-lite, vega-embed (and puppeteer-core) from npm into docs/browser/node_modules,
# for `dvc plots show` offline; `make screenshots PROJECT=DIR`: docs/img from a project after
# `dvc repro` (docs/browser/real_run.py makes one), in Debian's chromium (apt-get install chromium).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test test-full venv vega screenshots

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	ruff check .
	ruff format --check .
	python -m pytest

test-full: $(STAMP)
	ruff check .
	ruff format --check .
	KILL_MATRIX=full python -m pytest -m "full or not full"

venv: $(STAMP)

BROWSER := docs/browser

vega: $(BROWSER)/node_modules/.package-lock.json

$(BROWSER)/node_modules/.package-lock.json: $(BROWSER)/package.json $(BROWSER)/package-lock.json
	npm ci --prefix $(BROWSER) --no-audit --no-fund

screenshots: $(STAMP) vega
	@test -n "$(PROJECT)" || { echo "usage: make screenshots PROJECT=<a project after dvc repro>"; exit 2; }
	@command -v chromium >/dev/null || { echo "needs Debian's chromium: apt-get install -y chromium"; exit 2; }
	node $(BROWSER)/screenshots.mjs $(PROJECT) docs/img
	python $(BROWSER)/shrink.py docs/img

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --constraint constraints.txt --editable '.[s3,test]'
	touch $@
