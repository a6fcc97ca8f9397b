# Sessions: local development and tests.
#   make run        install, build, start stack + services + ingress; Ctrl-C stops them
#   make up         the same, in the background
#   make down       stop everything .dev/*.pid names
#   make test       build and run the test suite against a throwaway stack (ARGS="--filter X")
#   make status     show what runs
#   make bench      release-mode benchmarks against a throwaway stack (numbers + bench/results/*.json)
#   make clean-dev  down, then delete .dev (data, logs, tool venv)
# State lives in .dev/ (gitignored). See scripts/stack.sh and scripts/services.sh.

DEV := $(or $(SESSIONS_DEV_DIR),.dev)
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install build run up down status test bench clean-dev

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'

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

clean-dev: down
	rm -rf $(DEV)
