# Two commands on a fresh machine: `make demo` and `make test`. Both set up what they need.
# The virtual environment and the broker jars are cached outside the clone
# (STREAMDETECT_CACHE, default ~/.cache/streamdetect), keyed by their lock files, so a second
# run on the same machine, or a fresh clone in CI, reuses them.

SHELL := /bin/bash
PYTHON ?= python3
export STREAMDETECT_CACHE ?= $(HOME)/.cache/streamdetect
LOCK_KEY := $(shell cat requirements.lock requirements-test.lock | sha256sum | cut -c1-12)
VENV := $(STREAMDETECT_CACHE)/venv-$(LOCK_KEY)
PY := $(VENV)/bin/python
KAFKA := deploy/kafka/kafka.sh
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help setup venv jars browser kafka-start kafka-stop topics demo console lint-imports test bench bench-cascade soak recovery clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# requirements.lock pins what the service runs with (the image installs only it);
# requirements-test.lock pins the test tools on top (pytest, moto, import-linter, ...).
# No prerequisite on the locks: the folder name already carries their hash, and a
# fresh clone's newer file time must not rebuild a venv that matches it.
$(VENV)/.complete:
	@echo "setup: creating $(VENV) from requirements.lock and requirements-test.lock"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools
	$(VENV)/bin/pip install -q -r requirements.lock -r requirements-test.lock
	touch $@

venv: $(VENV)/.complete  ## create the cached virtual environment, install this clone into it
	@# The venv is shared between clones: point its editable install at this one.
	@$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e . >$(VENV)/editable-install.log 2>&1 \
		|| { cat $(VENV)/editable-install.log; exit 1; }
	@ln -sfn $(VENV) .venv

jars: venv  ## the broker's jars from Maven Central (cached)
	@$(KAFKA) fetch

# Debian's chromium and its chromedriver, for the console's browser test (nothing downloaded by a
# test tool at run time). Installed once; root or passwordless sudo needed on a fresh machine.
browser:  ## headless Chromium and chromedriver from Debian's packages (for the console's browser test)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "setup: installing Debian's chromium and chromium-driver"; \
		sudo=""; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get install -y -q chromium chromium-driver >/dev/null \
		|| { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi

setup: jars  ## virtual environment, broker jars and tiny models (the mini models ship with the package)
	@$(PY) -m streamdetect.cli models prepare --profile tiny

kafka-start: jars  ## start the local broker on 127.0.0.1
	@$(KAFKA) start

kafka-stop:  ## stop the local broker
	@$(KAFKA) stop

demo: jars  ## broker, calibration, real attacks on the mini models, a worker; prints verdicts; stops all it started
	@started=0; if ! $(KAFKA) status; then $(KAFKA) start && started=1; fi; \
	rc=0; $(PY) -m streamdetect.cli demo || rc=$$?; \
	if [ $$started = 1 ]; then $(KAFKA) stop; fi; exit $$rc

console: jars  ## the moderator console on the demo's broker and evidence, http://127.0.0.1:8471/ (Ctrl-C stops it)
	@if ! $(KAFKA) status; then $(KAFKA) start; echo "console: started the broker; \`make kafka-stop\` stops it"; fi
	$(PY) -m streamdetect.cli topics apply >/dev/null
	$(PY) -m streamdetect.cli console --evidence-store .run/demo/evidence \
		--since "$$(date -u -d '30 days ago' +%Y-%m-%dT%H:%M:%S)"

lint-imports: venv  ## the architecture's import contracts (pyproject.toml, docs/architecture.md)
	$(VENV)/bin/lint-imports --no-cache

test: setup browser lint-imports  ## import contracts, then the whole test suite (starts and stops its own broker and S3 server)
	$(PY) -m pytest

bench: setup  ## reference vs engine vs stream vs bare Kafka, tiny models (own broker unless KAFKA_BOOTSTRAP); writes .run/bench.json
	@mkdir -p .run
	$(PY) -m streamdetect.cli bench --profile tiny --json .run/bench.json

bench-cascade: venv  ## the cascade against always-regenerate on a 99% clean mini stream, one run; writes .run/bench-cascade.json
	@mkdir -p .run
	$(PY) -m streamdetect.cli --log-level warning bench-cascade --profile mini --json .run/bench-cascade.json

soak: setup  ## stream through one worker for MINUTES (default 10) and report its memory slope; writes .run/soak.json
	@mkdir -p .run
	$(PY) -m streamdetect.cli --log-level warning bench-soak --minutes $${MINUTES:-10} --json .run/soak.json

recovery: setup  ## kill one of two workers mid-stream: takeover time and duplicates; writes .run/recovery.json
	@mkdir -p .run
	$(PY) -m streamdetect.cli --log-level warning bench-recovery --json .run/recovery.json

clean:  ## remove this clone's run state (the cache stays)
	rm -rf .run .venv
