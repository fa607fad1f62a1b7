# Every target works as root (CI, containers) and as a user with sudo: sudo is added only when
# not already root, and only for what needs it (loading programs, reading kernel stats, apt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# What the tests use beside kstat: bpftool (does kstat agree with it?), jq (NDJSON in a pipe),
# a C compiler (struct offsets from linux/bpf.h), node and npm (the reference StatsD daemon),
# Prometheus and promtool (a real scraper), rsyslog (a real log shipper), logrotate, clang and
# iproute2 (eBPF programs built from C and attached by tc and ip, as agents attach theirs),
# tmux (kstat top driven in a real terminal), systemd-analyze (deploy/kstat.service checked).
# Each as PACKAGE:WHAT-PROVES-IT-IS-THERE, so that a node or cc installed otherwise is kept.
APT_PACKAGES := bpftool:/usr/sbin/bpftool jq:jq gcc:cc linux-libc-dev:/usr/include/linux/bpf.h nodejs:node npm:npm \
	prometheus:/usr/bin/promtool rsyslog:/usr/sbin/rsyslogd logrotate:/usr/sbin/logrotate clang:clang \
	iproute2:/usr/sbin/tc tmux:tmux systemd:/usr/bin/systemd-analyze
STATSD_DIR := tests/statsd
ARGS ?=

# The e2e workflow: `make e2e E2E_NAME=main` on the baseline, then `make e2e BASELINE=main` on
# the change. WORKLOAD is the command measured (your agent and its load test go here).
E2E_NAME ?= current
E2E_DURATION ?= 5s
E2E_LOGS ?= e2e-logs
PERF_DIR ?= perf
WORK_SCALE ?= 1
WORKLOAD ?= $(BIN)/kstat demo --workload-only -duration $(E2E_DURATION) --work-scale $(WORK_SCALE)
FAIL_ON ?= avg_runtime_ns:+10%
# Runs of the workload per side: with 4 or more, compare tests each change for significance.
RUNS ?= 1
# Which programs a run reports: the workload's own (command: held or loaded by its process tree),
# or every program on the host (host).
SCOPE ?= command

.PHONY: install install-runtime man deps kernel-deps test test-kernels test-unprivileged lint demo e2e soak soak-serve \
	clean bench

# Two stamps on one virtualenv: the demo needs only kstat's runtime dependencies (a few tens of
# MB); the tests and the linters bring the rest (matplotlib, SciPy, mypy, ruff, nox).
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	touch $@

$(BIN)/.runtime: pyproject.toml $(VENV)/.created
	$(BIN)/pip install --quiet --editable .
	touch $@

$(BIN)/.installed: pyproject.toml $(VENV)/.created
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $(BIN)/.runtime $@

install: $(BIN)/.installed

install-runtime: $(BIN)/.runtime

deps: $(STATSD_DIR)/node_modules/.installed

# Installs the Debian packages of a PACKAGE:PROOF list whose proof is missing.
define apt_install_missing
	@missing=$$(for pair in $(1); do \
		package=$${pair%%:*}; proof=$${pair#*:}; \
		[ -e "$$proof" ] || command -v "$$proof" >/dev/null 2>&1 || echo $$package; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

$(STATSD_DIR)/node_modules/.installed: $(STATSD_DIR)/package-lock.json
	$(call apt_install_missing,$(APT_PACKAGES))
	npm ci --prefix $(STATSD_DIR) --no-audit --no-fund --loglevel=error
	touch $@

test: install deps
	$(SUDO) $(BIN)/pytest $(ARGS)

# The kernel matrix (tests/kernels, docs/kernels.md): Debian's kernel images fetched into
# ~/.cache/kstat/kernels (never installed), each booted under qemu with the tests that differ
# between kernels, then the same tests natively; writes docs/kernels.md's support table.
# KERNELS="5.10 6.1" runs part of the matrix. What it needs: qemu, a static busybox for the
# initramfs, mke2fs for the read-only images of Python, the venv and the tree.
KERNEL_APT_PACKAGES := qemu-system-x86:qemu-system-x86_64 busybox-static:/usr/share/doc/busybox-static \
	e2fsprogs:mke2fs
KERNELS ?=

kernel-deps:
	$(call apt_install_missing,$(KERNEL_APT_PACKAGES))

test-kernels: install deps kernel-deps
	$(SUDO) $(BIN)/python -m tests.kernels $(if $(KERNELS),--kernels "$(KERNELS)") $(ARGS)

# The part of the suite that needs no kernel, run as an ordinary user (nobody, no capabilities):
# proof that no test without the `kernel` or `root` marker needs privileges. It runs in a copy
# of the tree under /tmp, with a virtualenv on the system's Python, so that nothing it needs
# lies in a directory only root can enter (pyenv's Python under /root, say).
SYSTEM_PYTHON ?= /usr/bin/python3
test-unprivileged:
	@scratch=$$(mktemp -d /tmp/kstat-unprivileged.XXXXXX); trap 'rm -rf "$$scratch"' EXIT; \
	tar --exclude=./.venv --exclude=./.git --exclude=./.nox --exclude=./tests/statsd/node_modules --exclude=./site \
		--exclude=./bench-results --exclude=./e2e-logs --exclude=./kernel-logs --exclude=./.hypothesis -cf - . \
		| tar -C "$$scratch" -xf - && \
	$(SYSTEM_PYTHON) -m venv "$$scratch/.venv" && \
	"$$scratch/.venv/bin/pip" install --quiet "$$scratch[test]" && \
	chmod -R a+rX "$$scratch" && \
	cd "$$scratch" && $(SUDO) setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
		env HOME=/tmp HYPOTHESIS_STORAGE_DIRECTORY=/tmp/kstat-unprivileged-hypothesis \
		.venv/bin/pytest -p no:cacheprovider -m "not kernel" $(ARGS)

# The docs site too: --strict fails on a broken link or anchor, or a page left out of the nav.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The manual page, generated from the parsers kstat runs with (`man -l kstat.1` reads it).
MAN_PAGE ?= man/kstat.1
man: install
	mkdir -p $(dir $(MAN_PAGE))
	$(BIN)/argparse-manpage --module kstat.cli --function full_parser --prog kstat \
		--project-name kstat --version $$($(BIN)/python -c 'import kstat; print(kstat.__version__)') \
		--description "measure what loaded eBPF programs cost inside the kernel" \
		--manual-title "kstat manual" --output $(MAN_PAGE)

demo: install-runtime
	$(SUDO) $(BIN)/kstat demo $(ARGS)

# Each run's report is kernel-stats-run-K.json; kernel-stats.json is the last (the seed's name).
# A baseline from before runs were kept has only kernel-stats.json: it counts as one run. The
# chart and the gate both take every run of each side (medians), so they cannot disagree.
e2e: install
	mkdir -p $(E2E_LOGS)/$(E2E_NAME)
	rm -f $(E2E_LOGS)/$(E2E_NAME)/kernel-stats-run-*.json
	for run in $$(seq 1 $(RUNS)); do \
		$(SUDO) $(BIN)/kstat run --scope $(SCOPE) -o $(E2E_LOGS)/$(E2E_NAME)/kernel-stats-run-$$run.json \
			-- $(WORKLOAD) || exit $$?; \
	done
	cp $(E2E_LOGS)/$(E2E_NAME)/kernel-stats-run-$(RUNS).json $(E2E_LOGS)/$(E2E_NAME)/kernel-stats.json
ifdef BASELINE
	mkdir -p $(PERF_DIR)
	runs() { ls $$1/kernel-stats-run-*.json 2>/dev/null || echo $$1/kernel-stats.json; }; \
	$(BIN)/kstat plot $$(runs $(E2E_LOGS)/$(E2E_NAME)) $$(runs $(E2E_LOGS)/$(BASELINE) | sed 's/^/--baseline=/') \
		-o $(PERF_DIR)/kernel-comparison-$(BASELINE).png
	runs() { ls $$1/kernel-stats-run-*.json 2>/dev/null || echo $$1/kernel-stats.json; }; \
	$(BIN)/kstat compare --format markdown $(foreach threshold,$(FAIL_ON),--fail-on $(threshold)) \
		$$(runs $(E2E_LOGS)/$(BASELINE)) -- $$(runs $(E2E_LOGS)/$(E2E_NAME)) \
		| tee $(PERF_DIR)/kernel-comparison-$(BASELINE).md; exit $${PIPESTATUS[0]}
endif

# The long soak of RELIABILITY.md (not in CI): SOAK_DURATION=10m by default.
soak: install
	$(SUDO) env SOAK_DURATION=$(SOAK_DURATION) $(BIN)/python -m tests.soak

# The continuous mode's soak: `kstat serve` scraped and streaming under churn (an hour: 1h).
soak-serve: install
	$(SUDO) env SOAK_MODE=serve SOAK_DURATION=$(or $(SOAK_DURATION),1h) $(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info site

# The benchmark suite (issue 7; BENCHMARKS.md): kstat against bpftool and a C floor, steady-state
# CPU and memory, whole windows located by time-stamped traffic, the stats' observer effect. A
# few minutes; BENCH_QUICK=1 for a short smoke run; GO_TOOL=path runs the windows beside a build
# of the Go collect-kernel-stats tool (BENCHMARKS.md says how to build one, outside the tree).
bench: install
	$(SUDO) env BENCH_QUICK=$(BENCH_QUICK) BENCH_BASELINE=$(BENCH_BASELINE) GO_TOOL=$(GO_TOOL) \
		$(BIN)/python -m bench.run
