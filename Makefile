# The front door. `make run` and `make test` work on a fresh machine; `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

# The tests start moto from the project's own virtualenv.
export MOTO_SERVER := $(CURDIR)/$(VENV)/bin/moto_server

FUNCTIONS := list-records get-record create-record update-record upsert-record delete-record \
	relate-records unrelate-records describe-table perform-action execute-changeset write-records \
	when-record-created when-record-updated when-record-deleted dataverse-webhook
ASL_VALIDATOR := infra/node_modules/.bin/asl-validator
# A Dataverse client written by others, pinned, run against the emulator by tests/e2e/tests/interop.rs.
INTEROP := tests/interop/node_modules/dynamics-web-api/package.json

.PHONY: help run dev dev-check test fmt fmt-check clippy bins cargo-test infra-check tools build-tools \
	deploy-tools build sizes deploy bench fuzz clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: bins ## Tour every function on the embedded Dataverse emulator
	target/debug/crm-tour

dev: bins build-tools ## Emulator on :8181 and `cargo lambda watch`, for manual invocations
	scripts/dev.sh

test: fmt-check clippy tools build-tools bins cargo-test dev-check infra-check ## Format check, clippy -D warnings, every test, infra lint

# The README's `make dev` path, unattended: cargo lambda watch serving sample events.
dev-check: bins build-tools
	scripts/dev.sh --check

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The suites run the function binaries as they ship, so they are built first.
bins:
	$(CARGO) build --workspace --bins --locked

cargo-test: $(INTEROP)
	$(CARGO) test --workspace --locked

$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
	@touch $@

# cfn-lint on the SAM template and on its offline translation, asl-validator on the state machines,
# and the least-privilege tests on the translated template.
infra-check: tools $(ASL_VALIDATOR)
	PYTHON=$(CURDIR)/$(VENV)/bin/python ASL_VALIDATOR=$(CURDIR)/$(ASL_VALIDATOR) infra/validate.sh

$(ASL_VALIDATOR): infra/package.json infra/package-lock.json
	npm ci --prefix infra --no-audit --no-fund --loglevel=error
	@touch $@

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

# One cargo-lambda run per function: built together, their features would be unified and every binary
# would carry every other's dependencies.
build: build-tools ## Build every function for arm64 Lambda: target/lambda/<fn>/bootstrap.zip
	rustup target add aarch64-unknown-linux-gnu
	@for f in $(FUNCTIONS); do \
		echo "cargo lambda build --release --arm64 --output-format zip -p $$f"; \
		PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) lambda build --release --arm64 --output-format zip --locked -p $$f || exit 1; \
	done
	@$(MAKE) --no-print-directory sizes

sizes: ## Print the size of each bootstrap.zip and of the binary inside it
	@printf '%-22s %12s %12s\n' function 'zip bytes' 'binary bytes'
	@for f in $(FUNCTIONS); do \
		zip=target/lambda/$$f/bootstrap.zip; \
		if [ -f $$zip ]; then \
			printf '%-22s %12s %12s\n' $$f $$(stat -c %s $$zip) $$($(PYTHON) -c 'import sys, zipfile; print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()))' $$zip); \
		else printf '%-22s %12s\n' $$f 'not built'; fi; \
	done

deploy-tools: $(VENV)/.deploy-tools

$(VENV)/.deploy-tools: requirements-deploy.txt $(VENV)/.test-tools
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	@touch $@

deploy: build infra-check deploy-tools ## Deploy with SAM (guided the first time; see infra/README.md)
	cd infra && if [ -f samconfig.toml ]; then \
		SAM_CLI_TELEMETRY=0 ../$(VENV)/bin/sam deploy; \
	else \
		SAM_CLI_TELEMETRY=0 ../$(VENV)/bin/sam deploy --guided --capabilities CAPABILITY_IAM; \
	fi

bench: ## Benchmarks, each beside its baseline: pages, drain, publishing, cold start vs a Node peer, push vs poll, service protection, S3 export memory
	$(CARGO) build --release --locked -p dataverse-emulator -p get-record -p update-record -p list-records -p when-record-created -p dataverse-webhook -p webhooks
	@# The Node peer of the cold-start bench; without Node the bench says so and measures ours alone.
	@if command -v npm >/dev/null; then npm ci --prefix tests/peer --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the cold-start bench will skip its Node peer"; fi
	$(CARGO) bench --locked -p dataverse-emulator --bench page
	$(CARGO) bench --locked -p e2e-tests --bench drain --bench publish --bench cold_start --bench push --bench limits
	@# Peak RSS of a 50,000-row list-records export to S3 (moto), with the release build Lambda runs.
	CRM_BIN_DIR=$(CURDIR)/target/release $(CARGO) test --locked -p e2e-tests --test list_to_s3 fifty -- --nocapture

fuzz: bins ## The property suites at length (FUZZ_CASES, default 1,000,000), with the number of cases run
	scripts/fuzz.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV) .run
