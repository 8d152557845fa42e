# The boot part of `make demo` (owner: lead). Included last, so it runs after
# the other areas' demo steps. See scripts/demo-boot.sh.
#
## demo-boot   publish a target, seed an image with it, boot it under QEMU/OVMF to the target's greeting

DEMO_STEPS += demo-boot

.PHONY: demo-boot
demo-boot: $(PHASE) $(INIT_BIN) $(KERNEL_CURRENT)
	scripts/demo-boot.sh $(PHASE) $(BUILD) "$$(cat $(KERNEL_CURRENT))" $(INIT_BIN)
