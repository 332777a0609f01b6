# mcp-remediator: every set-up step a fresh machine needs is a target here.
PYTHON ?= python3
DEBIAN_PACKAGES = redis-server redis-tools openssl prometheus prometheus-alertmanager prometheus-redis-exporter
PYTEST_ARGS ?=

.PHONY: deps deps-system deps-python test lint generate crds docs demo e2e fuzz chaos bench bench-redis bench-ingest \
	bench-operation

deps: deps-system deps-python

# Debian packages of the real daemons the tests start. Debian may start the packaged
# services on install (as their own users): they are stopped, the tests run their own.
deps-system:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq || exit 1; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
		$$SUDO pkill -u redis 2>/dev/null; $$SUDO pkill -u prometheus 2>/dev/null; true; \
	fi

deps-python:
	$(PYTHON) -m pip install -q -e '.[test,demo,mcp]'

lint: deps-python
	ruff check operator tests benchmarks
	ruff format --check operator tests benchmarks
	mypy
	PYTHONPATH=operator lint-imports

# Every generated file (mcp_remediator/tools/generate.py): the CRDs, the README's tables, the
# demo's copies of the runbook catalogue and of the operator's and runner's RBAC, and the
# tenants' step-actions ClusterRole. `crds` and `docs` regenerate their part only.
# PYTHONPATH: generate from this checkout's code, whatever checkout pip installed.
generate:
	PYTHONPATH=operator $(PYTHON) -m mcp_remediator.tools.generate

crds:
	PYTHONPATH=operator $(PYTHON) -m mcp_remediator.tools.generate crds

docs:
	PYTHONPATH=operator $(PYTHON) -m mcp_remediator.tools.generate readme

# One command: install everything, lint, run every test (exit 5 = no test ran = failure).
test: deps lint
	$(PYTHON) -m pytest tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected"; fi; exit $$rc

demo: deps
	$(PYTHON) -m mcp_remediator demo

# Real cluster, opt-in (tests/e2e/test_kind.py): creates a kind cluster, builds the image and
# loads it, applies manifests/default, restarts a Deployment through an McpRemediation,
# deletes the cluster. Skipped, with the reason, where docker or kind is missing.
e2e: deps-python
	MCP_E2E=1 $(PYTHON) -m pytest tests/e2e -m e2e $(PYTEST_ARGS)

# Chaos, opt-in at length: two operator processes, the leader SIGKILLed at a random point
# while 50 remediations run, CHAOS_ROUNDS times (make test runs one round).
CHAOS_ROUNDS ?= 20
chaos: deps-python
	CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(PYTHON) -m pytest tests/integration/test_chaos.py -s $(PYTEST_ARGS)

# Property-based fuzzing at 5,000 examples per property (make test runs 300 each):
# the receiver, validation, lint, step preparation, templates, redaction (the receiver's
# 30,000 examples alone took 4 min 17 s here).
fuzz: deps
	HYPOTHESIS_PROFILE=long $(PYTHON) -m pytest $(PYTEST_ARGS) \
		tests/integration/test_receiver_fuzz.py tests/integration/test_template_injection.py \
		tests/unit/test_properties.py tests/unit/test_fuzz_templates.py tests/unit/test_fuzz_lint.py

bench: bench-redis bench-ingest bench-operation

# Redis key expiry: redisExpireKeys vs the naive redis-py loop vs the server's own floor,
# on 2,000,000 keys; writes its section of docs/benchmarks.md. Takes about two minutes.
bench-redis: deps
	$(PYTHON) benchmarks/redis_expire.py --unlink --write docs/benchmarks.md

# Alert ingestion: the receiver vs a naive GET-then-POST receiver on the emulated API
# (alerts/s, POST → created p50/p99, a 10,000-alert duplicate storm, peak RSS); writes
# its section of docs/benchmarks.md. Takes about four minutes.
bench-ingest: deps-python
	$(PYTHON) benchmarks/alert_ingest.py --write docs/benchmarks.md

# Production operation, the code before (commit BEFORE_REF, the last before the executor,
# unpacked into build/before) and this checkout side by side, each operator a
# `python -m mcp_remediator run` process on the emulated API as its ServiceAccount: restart
# cost on finished records (the code before on BEFORE_RECORDS: it needs about an hour for
# 10,000 on two cores), alert → first action at 50 concurrent alerts (and a minimal Kopf
# operator's), failover of two replicas; writes its section of docs/benchmarks.md.
BEFORE_REF ?= 09cff64
BEFORE_RECORDS ?= 1000
bench-operation: deps-python
	rm -rf build/before && mkdir -p build/before
	git archive $(BEFORE_REF) operator manifests crds | tar -x -C build/before
	PYTHONPATH=operator $(PYTHON) benchmarks/operation.py --before build/before --after . \
		--records 10000 --before-records $(BEFORE_RECORDS) --write docs/benchmarks.md
