# The front door. `make run` and `make test` work on a fresh machine; `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo

.PHONY: help run test fmt fmt-check clippy cargo-test bench emulator clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## Start the Dataverse emulator with demo data (Ctrl-C to stop)
	$(CARGO) run --quiet -p dataverse-emulator -- --listen 127.0.0.1:8181 --seed demo

test: fmt-check clippy cargo-test ## Format check, clippy -D warnings, every test

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

cargo-test:
	$(CARGO) test --workspace --locked

bench: ## Benchmarks (the emulator's page serving)
	$(CARGO) bench -p dataverse-emulator --bench page

emulator: ## Start the emulator on 127.0.0.1:8181 (same as run, for now)
	$(CARGO) run --quiet -p dataverse-emulator -- --listen 127.0.0.1:8181

clean:
	$(CARGO) clean
