# phase-init: the static PID 1 of the initramfs (owner: phase-init).
# The initramfs target (mk/image.mk) depends on `init` / $(INIT_BIN) and puts
# $(INIT_BIN) at /init.

## init        build the static PID 1 (phase-init) into $(BUILD)/$(ARCH)/phase-init
INIT_RUST_TARGET_x86_64 := x86_64-unknown-linux-musl
INIT_RUST_TARGET_arm64 := aarch64-unknown-linux-musl
INIT_RUST_TARGET := $(INIT_RUST_TARGET_$(ARCH))
INIT_BIN := $(BUILD)/$(ARCH)/phase-init
INIT_CARGO_OUT := $(CARGO_TARGET_DIR)/$(INIT_RUST_TARGET)/initramfs/phase-init

.PHONY: init init-cargo
init: $(INIT_BIN)

# Cargo decides whether anything changed; the copy keeps its mtime when the
# bytes are the same, so the initramfs is not rebuilt for nothing.
init-cargo:
	@test -n "$(INIT_RUST_TARGET)" || { echo "init: no Rust target for ARCH=$(ARCH)"; exit 1; }
	$(CARGO) build --locked --profile initramfs --target $(INIT_RUST_TARGET) -p phase-init

$(INIT_BIN): init-cargo
	@mkdir -p $(@D)
	@cmp -s $(INIT_CARGO_OUT) $@ || cp $(INIT_CARGO_OUT) $@
