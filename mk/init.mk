# phase-init: the PID 1 of the initramfs (owner: phase-init).
# The initramfs target (mk/image.mk) depends on `init` / $(INIT_BIN) and puts
# $(INIT_BIN) at /init, with the dynamic loader and the shared libraries it
# needs (image/src/libs.rs).
#
# phase-init is the release build that `make host` already makes for the
# whole workspace: glibc-dynamic like the host tools, so it shares every
# compiled dependency with them instead of a third build of the workspace
# for a static target (docs/phase-init.md, "Building").

## init        the PID 1 (phase-init, stripped) into $(BUILD)/$(ARCH)/phase-init
INIT_BIN := $(BUILD)/$(ARCH)/phase-init
INIT_CARGO_OUT := $(HOST_BIN)/phase-init

.PHONY: init
init: $(INIT_BIN)

# `host` always runs cargo, which decides whether anything changed; the
# stripped copy keeps its mtime when the bytes are the same, so the
# initramfs is not rebuilt for nothing.
$(INIT_BIN): host | image-arch-check
	@mkdir -p $(@D)
	strip --strip-all -o $@.new $(INIT_CARGO_OUT)
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi
