# Boot benchmark. See docs/benchmarks.md "Boot".
#
## bench-boot  QEMU TCG boots: Phase Boot warm cache (firmware -> PID 1 -> kexec -> handover) vs the same kernel+initramfs over HTTP with iPXE -> docs/benchmarks.md
#
# Knob: BENCH_BOOT_RUNS (3). Needs the kernel and phase-init in $(BUILD).

BENCH_STEPS += bench-boot

.PHONY: bench-boot
bench-boot: host init kernel
	scripts/bench-boot.sh $(PHASE) $(BUILD) docs/benchmarks.md
