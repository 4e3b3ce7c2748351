VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install tools run test lint bench docker compose-check dist clean

install: $(STAMP)

# The service, and the Python client (client/, a distribution of its own) with its extras.
$(STAMP): setup.cfg setup.py pyproject.toml client/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e './client[all]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m service

# The page's browser tests drive Debian's Chromium, never a browser build of their own;
# the benchmark's own test drives wrk and a throwaway PostgreSQL server (bench/postgres.py).
# All are Debian packages, installed when missing.
test: $(STAMP) tools
	$(PY) -m pytest --cov --cov-report=term --cov-fail-under=90

tools:
	command -v chromium >/dev/null && command -v wrk >/dev/null \
	  && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium wrk postgresql)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

# The benchmark (up to 5 minutes; not part of `make test`): see docs/performance.md.
# BACKEND=postgresql runs it on a throwaway PostgreSQL server.
BACKEND ?= sqlite
bench: $(STAMP) tools
	$(PY) -m bench --backend $(BACKEND)

docker:
	docker build -t calculations .

# compose.yaml run whole with podman and podman-compose, on images built here (not part of
# `make test`; about 10 minutes the first time, 3 after): see docs/scaling-out.md.
compose-check:
	bash tools/compose-check

# The source archive and the wheel of the service, and the client's wheel, built with the
# venv's own setuptools (no download).
DIST := dist
dist: $(STAMP)
	rm -rf $(DIST) build client/build
	$(PY) -m build --no-isolation --outdir $(DIST) .
	$(PY) -m build --no-isolation --wheel --outdir $(DIST) client

clean:
	rm -rf $(VENV) var build dist *.egg-info .coverage .mypy_cache .ruff_cache .pytest_cache
