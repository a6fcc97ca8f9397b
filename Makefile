# Sessions: local development and tests.
#   make run        install, build, start stack + services + ingress; Ctrl-C stops them
#   make up         the same, in the background
#   make down       stop everything .dev/*.pid names
#   make test       build and run the test suite against a throwaway stack (ARGS="--filter X")
#   make status     show what runs
#   make bench      release-mode benchmarks against a throwaway stack (numbers + bench/results/*.json)
#   make faults     fault drills under load (kill -9 each service, restart servers); non-zero on any loss
#   make fuzz       schemathesis against the served OpenAPI document; non-zero on any 5xx or mismatch
#   make clean-dev  down, then delete .dev (data, logs, tool venv)
# State lives in .dev/ (gitignored). See scripts/stack.sh and scripts/services.sh.

DEV := $(or $(SESSIONS_DEV_DIR),.dev)
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install build run up down status test bench faults fuzz clean-dev

help:
	@sed -n '2,11p' Makefile | sed 's/^# \{0,1\}//'

install:
	@scripts/stack.sh install

build:
	swift build

run:
	@scripts/stack.sh install
	swift build
	@exec scripts/services.sh run

up:
	@scripts/stack.sh install
	swift build
	@scripts/services.sh up

down:
	@scripts/services.sh down

status:
	@scripts/services.sh status

test:
	@exec scripts/test.sh $(ARGS)

bench:
	@exec scripts/bench.sh

faults:
	@scripts/stack.sh install
	swift build
	@SESSIONS_BIN_DIR=$$(swift build --show-bin-path) exec scripts/faults.sh

fuzz:
	@scripts/stack.sh install
	swift build
	@SESSIONS_BIN_DIR=$$(swift build --show-bin-path) exec scripts/fuzz.sh

clean-dev: down
	rm -rf $(DEV)
