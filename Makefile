# The two commands of the set-up contract: `make demo` and `make test`
# (`make test-fast` is the development loop: the tests not marked slow).
# Both create .venv and install when needed, and are idempotent: the install
# step re-runs only when pyproject.toml changes.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trustfabric demo

# The whole suite in two passes: the tests not marked slow on two workers
# (pytest-xdist, a file's tests on one worker), then the slow ones - real floors,
# engine processes, CLI subprocesses, each timing a live system - one at a time.
# pytest exits 5 when it collected nothing; that is not a failure of the code.
PYTEST_FAST := $(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile
test: $(STAMP)
	$(PYTEST_FAST); rc=$$?; if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	$(BIN)/python -m pytest -m slow; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# Everything but the tests marked slow: the development loop.
test-fast: $(STAMP)
	$(PYTEST_FAST); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) .trustfabric .pytest_cache
