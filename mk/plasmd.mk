# plasmd: the WASM job daemon and the demo job (owner: plasmd). See docs/plasmd.md.
#
## plasmd-jobs  assemble the demo job plasmd/jobs/hello.wat into $(BUILD)/jobs/hello.wasm

PLASMD := $(HOST_BIN)/plasmd

.PHONY: plasmd plasmd-jobs
# plasmd is one of the host binaries (`host` builds the workspace's bins).
plasmd: host

plasmd-jobs: plasmd
	mkdir -p $(BUILD)/jobs
	$(PLASMD) assemble plasmd/jobs/hello.wat $(BUILD)/jobs/hello.wasm
