# Phase Boot. Two commands matter on a fresh Debian machine:
#   make demo   the main job (installs what it needs, builds, runs)
#   make test   every test (installs what it needs, builds, runs)
# Each area of the project keeps its targets in mk/<area>.mk; this file holds
# the shared variables and the two entry points.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ARCH ?= x86_64
BUILD ?= $(CURDIR)/build
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export BUILD ARCH
HOST_BIN := $(CARGO_TARGET_DIR)/release
PHASE := $(HOST_BIN)/phase
VENV := $(BUILD)/venv
# Cargo tools that scripts/deps-check.sh builds once per machine (cargo-deny).
export PHASE_TOOLS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/phase-boot/tools

# Prerequisites that `make test` builds before running cargo test; the areas
# append to these in their mk/*.mk.
TEST_PREREQS :=
DEMO_STEPS :=
BENCH_STEPS :=

.PHONY: help deps host lint test demo bench clean
help:
	@echo "make demo    run the main job (see README.md)"
	@echo "make test    run every test"
	@echo "make bench   run the benchmarks into docs/benchmarks.md"
	@grep -h -E '^## ' mk/*.mk | sed 's/^## /make /'

deps:
	scripts/deps-check.sh --install

# Host tools (phase, plasmd, ...) in release mode, built as the whole
# workspace: cargo then resolves the same features as `cargo test --workspace`
# does, so the test build reuses every compiled dependency. Built one package
# at a time (`-p phase`, `-p plasmd`), arti, libp2p and wasmtime unify to other
# feature sets and a cold `make test` compiled about 280 of them twice.
host: deps
	$(CARGO) build --locked --release --workspace --bins

include $(sort $(wildcard mk/*.mk))

# clippy runs in the release profile: the build scripts and proc-macros it
# compiles (ring's C, cranelift's generated code, serde_derive, ...) are then
# the very ones the release build and the test binaries reuse, instead of a
# second set in the dev profile.
# cargo-deny (deny.toml): licences and banned crates, offline, over the
# sources `cargo fetch` keeps; advisories need the RustSec database from the
# network, so they are not part of it (README.md, "Set-up").
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings
	$(CARGO) fetch --locked --quiet
	PATH="$(PHASE_TOOLS)/bin:$$PATH" $(CARGO) deny --locked --offline check --hide-inclusion-graph licenses bans

# One cargo profile for everything (release): the host tools that build the
# test images and the test binaries share their compiled dependencies.
test: deps lint host $(TEST_PREREQS)
	PHASE_BIN=$(PHASE) PHASE_BUILD=$(BUILD) PHASE_VENV=$(VENV) \
	  $(CARGO) test --release --locked --workspace -- --test-threads=2

bench: deps host $(BENCH_STEPS)

demo: deps host $(DEMO_STEPS)

clean:
	rm -rf $(BUILD)
