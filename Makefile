# rayline: `make run` runs the main example, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BROWSER := $(VENV)/.browser
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: run test test-all chaos bench lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,jobs]"
	touch $(STAMP)

# The web UI's tests drive Debian's chromium through its chromedriver (a browser that
# downloads itself cannot be fetched here): apt installs both once; `make run` needs neither.
$(BROWSER): | $(STAMP)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "no apt-get: install chromium and its chromedriver to run the browser tests"; \
	else \
	  SUDO=""; if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi; \
	  echo "installing chromium and chromium-driver (apt) for the browser tests"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi
	touch $(BROWSER)

run: $(STAMP)
	$(PY) examples/hello.py

test: $(STAMP) $(BROWSER)
	$(VENV)/bin/ruff check runtime actors tests examples
	$(MAKE) --no-print-directory typecheck
	$(PY) -m pytest -q -m "not soak"

test-all: $(STAMP) $(BROWSER)
	$(PY) -m pytest -q

chaos: $(STAMP)
	$(PY) -m pytest -q -m chaos

bench: $(STAMP)
	$(PY) benchmarks/run.py $(if $(PEERS),--peers,) $(if $(RUNS),--runs $(RUNS),)

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime actors tests examples benchmarks

# mypy --strict over the package as it installs (rayline = runtime/, rayline.actors =
# actors/): a tree of links with that shape, since mypy cannot follow the package-dir map;
# then over examples/, as a user's code type-checks against it
typecheck: $(STAMP)
	rm -rf .typecheck && mkdir -p .typecheck/rayline
	for f in runtime/*; do ln -s ../../$$f .typecheck/rayline/; done
	ln -s ../../actors .typecheck/rayline/actors
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p rayline
	cd .typecheck && MYPYPATH=. ../$(VENV)/bin/mypy --config-file ../pyproject.toml ../examples/*.py

clean:
	rm -rf $(VENV) .rayline .pytest_cache .typecheck
