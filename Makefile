# dtest — run `make help` for the targets.
SHELL := /bin/bash
BUN := node_modules/.bin/bun
BIN := ./dtest
SOURCES := $(shell find cmd core -name '*.ts' -not -name '*.test.ts') package.json

COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || \
	(command -v docker-compose >/dev/null && echo docker-compose) || echo podman-compose)
QUEUE ?= worker-a
COUNT ?= 2
TASKS ?= 20
LOAD_ARGS ?=

# With podman (scripts/container-engine.sh) and no Docker socket, talk to podman's socket, and
# put the workers on the host's network: podman 4.3 cannot map host.docker.internal.
ifeq ($(DOCKER_HOST),)
ifeq ($(wildcard /var/run/docker.sock),)
ifneq ($(wildcard /run/podman/podman.sock),)
export DOCKER_HOST := unix:///run/podman/podman.sock
export COMPOSE_FILE ?= docker-compose.yml:docker-compose.test.yml
endif
endif
endif

.PHONY: help install build image engine run demo up down logs ps monitor scale scale-all status \
	load-test test typecheck clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.installed ## Install dependencies (Bun comes from npm)

$(BIN): node_modules/.installed $(SOURCES)
	$(BUN) build --compile --minify --sourcemap --bytecode --format=esm --compile-jit-policy=20 cmd/cli.ts --outfile $(BIN)

build: $(BIN) ## Compile ./dtest, one self-contained executable, and the image if an engine answers
	@if $(COMPOSE) version >/dev/null 2>&1 && [ -n "$$DOCKER_HOST$$(ls /var/run/docker.sock 2>/dev/null)" ]; \
		then $(MAKE) --no-print-directory image; else echo "no container engine: image not built (make engine)"; fi

image: $(BIN) ## Build the worker image (dtest:latest) from ./dtest
	$(COMPOSE) build

engine: ## Set up podman as a Docker-compatible engine (Debian, root)
	scripts/container-engine.sh >/dev/null

run: $(BIN) ## Dispatch the scenario to workers that are already running
	$(BIN) dispatch

demo: $(BIN) ## Start local workers, run the seed scenario, stop them
	scripts/deps.sh broker
	$(BIN) dispatch --spawn-workers

up: image ## Start one worker container per queue
	$(COMPOSE) up -d

down: ## Stop the worker containers (SIGTERM: in-flight tasks finish) and remove them
	$(COMPOSE) down

logs: ## Follow the workers' logs
	$(COMPOSE) logs -f

ps: ## List the worker containers
	$(COMPOSE) ps

monitor: $(BIN) ## Follow workers and tasks live (Ctrl-C to stop)
	$(BIN) monitor

scale: $(BIN) ## Scale one service: make scale QUEUE=worker-a COUNT=3
	$(BIN) scale $(QUEUE) $(COUNT)

scale-all: $(BIN) ## Scale every worker service: make scale-all COUNT=4
	$(BIN) scale --all $(COUNT)

status: $(BIN) ## Workers, messages and containers per queue
	$(BIN) status

load-test: $(BIN) ## Load the running workers: make load-test TASKS=20 [LOAD_ARGS=--spawn-workers]
	$(BIN) load-test --tasks $(TASKS) $(LOAD_ARGS)

test: $(BIN) ## Install what the tests need, then run them all (broker, binary, Celery, containers)
	scripts/deps.sh test
	$(BUN) test --timeout 60000

typecheck: node_modules/.installed ## Type-check with tsc (strict)
	node_modules/.bin/tsc --noEmit -p .

clean: ## Remove the binary and dependencies
	rm -rf $(BIN) node_modules
