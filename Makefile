# dtest — run `make help` for the targets.
SHELL := /bin/bash
BUN := node_modules/.bin/bun
BIN := ./dtest
SOURCES := $(shell find cmd core -name '*.ts' -not -name '*.test.ts') package.json

.PHONY: help install build run demo test typecheck clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.installed ## Install dependencies (Bun comes from npm)

$(BIN): node_modules/.installed $(SOURCES)
	$(BUN) build --compile --minify --sourcemap cmd/cli.ts --outfile $(BIN)

build: $(BIN) ## Compile ./dtest, one self-contained executable

run: build ## Dispatch the scenario to workers that are already running
	$(BIN) dispatch

demo: build ## Start local workers, run the seed scenario, stop them
	$(BIN) dispatch --spawn-workers

test: build ## Run every test against RabbitMQ and the compiled binary
	$(BUN) test

typecheck: node_modules/.installed ## Type-check with tsc (strict)
	node_modules/.bin/tsc --noEmit -p .

clean: ## Remove the binary and dependencies
	rm -rf $(BIN) node_modules
