# Attaché: common tasks. `make help` lists them.

CARGO ?= cargo

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## Install what is missing, run the whole pipeline on the examples, print the outcome
	scripts/demo.sh

.PHONY: services
services: ## Install and start PostgreSQL and RabbitMQ on loopback if they are not running
	scripts/ensure-services.sh

.PHONY: python-env
python-env: ## Create .venv with the Python packages the tests and demo use
	scripts/python-env.sh

.PHONY: build
build: ## Build the three binaries
	$(CARGO) build --bins

.PHONY: test
test: python-env deploy-check ## Run every test, then chaos-small and bench-smoke (needs PostgreSQL and RabbitMQ: make services)
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory chaos-small
	$(MAKE) --no-print-directory bench-smoke

.PHONY: chaos
chaos: build python-env ## Crash workers and restart the services under 1,000 tasks; check nothing is lost
	.venv/bin/python scripts/chaos.py --tasks 1000 --rate 20

.PHONY: chaos-small
chaos-small: build python-env ## The chaos test with 60 tasks and the same faults, about a minute
	.venv/bin/python scripts/chaos.py --tasks 60 --rate 2

.PHONY: bench
bench: python-env ## Measure throughput, latency, memory, scaling and credential requests beside same-run references; write BENCHMARKS.md
	$(CARGO) build --release --bins
	.venv/bin/python scripts/bench.py

.PHONY: bench-smoke
bench-smoke: build python-env ## A bench run of tiny sizes on the debug build, about a minute, that proves the harness works
	.venv/bin/python scripts/bench.py --smoke --target-dir target/debug

.PHONY: deploy-check
deploy-check: ## Validate deploy/ offline (manifests, alerts, dashboard, Compose); installs promtool for the tests
	deploy/check.sh

.PHONY: image
image: ## Build the container image of the three binaries (needs Docker with BuildKit)
	docker build -f deploy/docker/Dockerfile -t attache:dev .

.PHONY: check
check: ## Formatting, clippy with warnings denied, and docs
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

.PHONY: clean
clean: ## Remove build output and demo state
	$(CARGO) clean
	rm -rf .run
