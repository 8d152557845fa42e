# The boot part of `make demo` (owner: lead). Included last, so it runs after
# the other areas' demo steps.
#
## demo-boot   build the image and boot it under QEMU/OVMF, streaming the console

DEMO_STEPS += demo-boot

.PHONY: demo-boot
demo-boot: image
	@echo
	@echo "== boot: $(IMAGE_IMG) under QEMU/OVMF (TCG, no KVM), mode local; the console follows"
	scripts/test-qemu-x86.sh --image $(IMAGE_IMG) --mode local --append phase.test=poweroff \
	  --timeout 300 --stream
