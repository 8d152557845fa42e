# Fuzzing of the parsers that read untrusted bytes (owner: fuzz). See
# docs/fuzzing.md.
#
## fuzz        every fuzz target for FUZZ_SECONDS (600) each, two at a time; corpora grow in $(BUILD)/fuzz
## fuzz-smoke  every fuzz target for FUZZ_SMOKE_SECONDS (5) each (part of `make test`)
#
# The targets live in fuzz/ (its own cargo workspace, excluded from the root
# one) and are built on the stable toolchain with rustc's sancov pass and
# libFuzzer (libfuzzer-sys, compiled with the system C++ compiler).
# FUZZ_TARGETS="cmdline http_range" runs only those.

FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_TARGETS ?=
FUZZ_ENV := FUZZ_OUT=$(BUILD)/fuzz FUZZ_TARGET_DIR=$(CARGO_TARGET_DIR)/fuzz

TEST_PREREQS += fuzz-smoke

.PHONY: fuzz fuzz-build fuzz-smoke
fuzz-build: deps
	$(FUZZ_ENV) scripts/fuzz.sh build

fuzz-smoke: fuzz-build
	$(FUZZ_ENV) scripts/fuzz.sh run $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

fuzz: fuzz-build
	$(FUZZ_ENV) scripts/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_TARGETS)
