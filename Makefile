# scifed — every target creates .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test fuzz demo bench protos lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

protos: $(STAMP)
	$(PY) -m protos.generate

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two workers (the machines have 2 cores), one test file per worker at a time: each
# integration module starts its own federation on its own ports.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile

# Property-based fuzzing of every input parser (tests/attacks/test_fuzz.py), 10,000 cases
# per entry point; `make test` runs the same file with 200.
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	SCIFED_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider \
		--timeout=0 tests/attacks/test_fuzz.py

demo: $(STAMP)
	$(VENV)/bin/scifed demo

# AREAS="stats psi" runs only those areas; AREAS=stats100 the 100-node stats job
bench: $(STAMP)
	AREAS="$(AREAS)" $(PY) -m benchmarks

clean:
	rm -rf demo-out bench-out .pytest_cache
