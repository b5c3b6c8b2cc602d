# `make demo` and `make test` work from a clean clone: they install what is missing, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: the solver and MPI really run here; redis-server is the tests' real Redis.
DEMO_PACKAGES := openfoam openfoam-examples openmpi-bin util-linux
# ssh backend tests: one sshd per node in network namespaces (iproute2), rsync for staging (and the file sync's
# transfer to nodes, and the baseline of bench/sync.py).
SSH_PACKAGES := openssh-server openssh-client rsync iproute2
# slurm backend tests: a private munged + slurmctld + slurmd (no accounting database needed).
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
# solver plugin tests: CalculiX runs for real (and its own test suite's decks, for ccx-conformance);
# shellcheck checks every rendered launch script.
PLUGIN_PACKAGES := calculix-ccx calculix-ccx-test shellcheck
TEST_PACKAGES := $(DEMO_PACKAGES) redis-server
# Installed without recommends: openssh-server would pull in systemd through libpam-systemd, and the
# desktop is a third of the size and time. The desktop: TigerVNC, the X fonts xterm needs (only a
# Recommends of TigerVNC), openbox, noVNC over websockify; its tests also load noVNC in chromium and check
# firewall rules with nft.
DESKTOP_PACKAGES := tigervnc-standalone-server tigervnc-tools xfonts-base openbox xterm novnc websockify
# The solvers' apps on the desktop: ParaView (its Python, for --script, is a separate package), CalculiX
# GraphiX, the optional file manager; xwininfo/xprop (x11-utils) let the tests look inside the session, and
# xclip read and set its clipboard. The job panel is a Tk window on the system python3 (python3-tk); its test
# clicks its buttons with xdotool.
DESKTOP_APP_PACKAGES := paraview python3-paraview calculix-cgx pcmanfm x11-utils xclip python3-tk xdotool
LEAN_TEST_PACKAGES := $(SSH_PACKAGES) $(SLURM_PACKAGES) $(PLUGIN_PACKAGES) $(DESKTOP_PACKAGES) \
                      $(DESKTOP_APP_PACKAGES) chromium chromium-driver nftables

.PHONY: demo test lint typecheck unit integration bench resilience ccx-conformance setup openapi system-deps-demo system-deps-test clean

demo: system-deps-demo $(STAMP)
	$(VENV)/bin/e2e demo

# System packages and the virtualenv first (a fresh machine may lack python3-venv), then lint and types, then tests.
# Three pytest sessions at once, each with its own temp folder and Redis: the unit suite (CPU-bound on fakeredis)
# and the real-component suites in two halves, which mostly wait on real processes (sshd, Slurm, solvers, the
# engine's timeouts). Half A holds every suite that builds network-namespace or Slurm clusters, so that the
# OS accounts' authorized_keys on the nodes are only ever written by one session; half B is the rest. Each
# half names its slowest tests; the logs of A and of the unit suite follow B's.
INTEGRATION_A := tests/faults tests/integration/ssh tests/integration/slurm tests/integration/test_sync_ssh.py \
                 tests/integration/test_worker_crash.py
test: system-deps-test $(STAMP) lint typecheck
	@$(PY) -m pytest -q -ra -p no:cacheprovider tests/unit > $(VENV)/unit-tests.log 2>&1 & unit=$$!; \
	$(PY) -m pytest -q -ra -p no:cacheprovider --durations=25 $(INTEGRATION_A) > $(VENV)/integration-a.log 2>&1 & a=$$!; \
	$(PY) -m pytest -q -ra --durations=25 tests/integration $(addprefix --ignore=,$(INTEGRATION_A)); brc=$$?; \
	wait $$a; arc=$$?; echo "== integration half A ($(INTEGRATION_A)), run beside: exit $$arc"; \
	cat $(VENV)/integration-a.log; \
	wait $$unit; urc=$$?; echo "== the unit suite, run beside: exit $$urc"; \
	cat $(VENV)/unit-tests.log; \
	echo "== exits: integration B $$brc, integration A $$arc, unit $$urc"; \
	test $$brc -eq 0 && test $$arc -eq 0 && test $$urc -eq 0

# Style and the layer contracts ([tool.importlinter] in pyproject.toml); a violation fails `make test`.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Types of the public surface: the model, the store, the control surface and the plugin contract.
TYPECHECK_PATHS := orchestrator/model orchestrator/store orchestrator/control solvers/base.py
typecheck: $(STAMP)
	$(VENV)/bin/mypy $(TYPECHECK_PATHS)

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: system-deps-test $(STAMP)
	$(PY) -m pytest -q -ra tests/integration

bench: system-deps-test $(STAMP)
	$(PY) bench/latency.py --jobs 200
	$(PY) bench/ssh.py
	$(PY) bench/desktop.py --jobs 10
	$(PY) bench/sync.py
	$(PY) bench/api.py
	$(PY) bench/notify.py --samples 60
	$(PY) bench/rules.py
	$(PY) bench/scale.py --sizes 50,300
	$(PY) bench/batch.py --jobs 500

# The hardening suites (tests/faults) and one table of their figures; E2E_LONG=1 runs the long variants.
resilience: system-deps-test $(STAMP)
	E2E_LONG=$(E2E_LONG) $(PY) bench/resilience.py

# Every deck of CalculiX's own test suite, directly and through the engine's rendered run: one table
# (deck, direct ok?, engine identical?, seconds) and the totals; fails when a deck ccx runs differs.
CCX_JOBS ?= 2
ccx-conformance: system-deps-test $(STAMP)
	$(PY) tests/conformance/ccx.py --jobs $(CCX_JOBS)

setup: system-deps-test $(STAMP)

# The REST API's schema, checked in (a test compares it with the served one).
openapi: $(STAMP)
	$(PY) -c 'import json; from orchestrator.api.app import create_app; from orchestrator.model.settings import Settings; \
	  print(json.dumps(create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi(), indent=1, sort_keys=True))' \
	  > docs/openapi.json

system-deps-demo:
	@$(MAKE) --no-print-directory _apt PKGS="$(DEMO_PACKAGES)"

system-deps-test:
	@$(MAKE) --no-print-directory _apt PKGS="$(TEST_PACKAGES)"
	@$(MAKE) --no-print-directory _apt PKGS="$(LEAN_TEST_PACKAGES)" APT_FLAGS=--no-install-recommends

# Installs only the packages that are missing, as root or through sudo, and says which.
APT_FLAGS ?=
_apt:
	@missing=""; for p in $(PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	  else echo "need root or sudo to install:$$missing" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 \
	    install -y -qq $(APT_FLAGS) $$missing >/dev/null; \
	  echo "installed:$$missing"; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
