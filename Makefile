# aloop: `make round` and `make test` work as the first command on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.yaml
# More options for `aloop round`: make round ARGS="--set review=manual".
ARGS ?=

.PHONY: install round test test-slow ui bench clean

install: $(STAMP)

# Redone only when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

round: install
	$(BIN)/aloop round --config $(CONFIG) $(ARGS)

test: install
	$(BIN)/pytest -q

# The end-to-end tests marked slow, deselected by `make test`.
test-slow: install
	$(BIN)/pytest -q -m slow

ui: install
	$(BIN)/aloop ui --config $(CONFIG)

# Every benchmark, each in its own interpreter. It includes benchmarks.campaign, which only rebuilds
# its report (under a minute) when every round is in benchmarks/results/campaign_records/; a round
# missing there is computed, and a full campaign (2 systems x 5 arms x 3 seeds x 4 rounds of 16
# CHGNet relaxations, SevenNet on every novel hit) takes hours on 2 cores (README, "Benchmarks").
# Today's defaults are campaign v8 (its Li-Mn-O aloop arm is recorded); v2-v7's records are the earlier code's (README).
bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
