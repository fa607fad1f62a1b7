# Every target works as root (CI, containers) and as a user with sudo: sudo is added only when
# not already root, and only for what needs it (loading programs, reading kernel stats, apt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# What the tests use beside kstat: bpftool (does kstat agree with it?), jq (NDJSON in a pipe),
# a C compiler (struct offsets from linux/bpf.h), node and npm (the reference StatsD daemon).
# Each as PACKAGE:WHAT-PROVES-IT-IS-THERE, so that a node or cc installed otherwise is kept.
APT_PACKAGES := bpftool:/usr/sbin/bpftool jq:jq gcc:cc linux-libc-dev:/usr/include/linux/bpf.h nodejs:node npm:npm
STATSD_DIR := tests/statsd
ARGS ?=

.PHONY: install deps test lint demo clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

install: $(BIN)/.installed

deps: $(STATSD_DIR)/node_modules/.installed

$(STATSD_DIR)/node_modules/.installed: $(STATSD_DIR)/package-lock.json
	@missing=$$(for pair in $(APT_PACKAGES); do \
		package=$${pair%%:*}; proof=$${pair#*:}; \
		[ -e "$$proof" ] || command -v "$$proof" >/dev/null 2>&1 || echo $$package; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	npm ci --prefix $(STATSD_DIR) --no-audit --no-fund --loglevel=error
	touch $@

test: install deps
	$(SUDO) $(BIN)/pytest $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install
	$(SUDO) $(BIN)/kstat demo $(ARGS)

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
