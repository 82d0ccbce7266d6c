# The front door. `make run` and `make test` work on a fresh machine; `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

# The tests start moto from the project's own virtualenv.
export MOTO_SERVER := $(CURDIR)/$(VENV)/bin/moto_server

.PHONY: help run dev test fmt fmt-check clippy bins cargo-test tools build-tools bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: bins ## Tour every function on the embedded Dataverse emulator
	target/debug/crm-tour

dev: bins build-tools ## Emulator on :8181 and `cargo lambda watch`, for manual invocations
	scripts/dev.sh

test: fmt-check clippy tools bins cargo-test ## Format check, clippy -D warnings, every test

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The suites run the function binaries as they ship, so they are built first.
bins:
	$(CARGO) build --workspace --bins --locked

cargo-test:
	$(CARGO) test --workspace --locked

tools: $(VENV)/.test-tools ## Python test tools (moto, cfn-lint) into .venv

$(VENV)/.test-tools: requirements.txt infra/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

build-tools: $(VENV)/.build-tools ## cargo-lambda and zig into .venv

$(VENV)/.build-tools: requirements-build.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-build.txt
	@touch $@

bench: ## Benchmarks (the emulator's page serving)
	$(CARGO) bench -p dataverse-emulator --bench page

clean:
	$(CARGO) clean
	rm -rf $(VENV) .run
