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

# The whole suite in three passes: the tests not marked slow on two workers
# (pytest-xdist, a file's tests on one worker); the slow ones - real floors, engine
# processes, CLI subprocesses - also on two workers, a file to a worker; then the slow
# ones marked serial - benchmarks, and tests whose outcome hangs on wall-clock timers
# (leases, certificate expiry, table lifetimes) - one at a time, with nothing beside them.
# pytest exits 5 when it collected nothing; that is not a failure of the code.
PYTEST_FAST   := $(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile
PYTEST_SLOW   := $(BIN)/python -m pytest -m "slow and not serial" -n 2 --dist loadfile
PYTEST_SERIAL := $(BIN)/python -m pytest -m "slow and serial"
test: $(STAMP)
	$(PYTEST_FAST); rc=$$?; if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	$(PYTEST_SLOW); rc=$$?; if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; \
	$(PYTEST_SERIAL); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

# Everything but the tests marked slow: the development loop.
test-fast: $(STAMP)
	$(PYTEST_FAST); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) .trustfabric .pytest_cache
