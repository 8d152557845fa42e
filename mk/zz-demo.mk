# The boot part of `make demo` (owner: target). Included last, so it runs
# after the other areas' demo steps. See scripts/demo-peer.sh.
#
## demo-boot     a VM boots the demo target from a peer in a test netns (empty cache) to "Hello from Phase WASM"
## demo-offline  the older offline demo: a seeded image boots a busybox target with no network

DEMO_STEPS += demo-boot

.PHONY: demo-boot demo-offline
demo-boot: publish-demo $(PHASE) $(INIT_BIN) $(KERNEL_CURRENT)
	scripts/demo-peer.sh $(PHASE) $(BUILD) "$$(cat $(KERNEL_CURRENT))" $(INIT_BIN)

demo-offline: $(PHASE) $(INIT_BIN) $(KERNEL_CURRENT)
	scripts/demo-boot.sh $(PHASE) $(BUILD) "$$(cat $(KERNEL_CURRENT))" $(INIT_BIN)

# The attestation benchmark boots the demo node. See docs/benchmarks.md "Attestation".
## bench-attest  time `phase attest verify` of the booted demo node against a bare GET /attest -> docs/benchmarks.md
BENCH_STEPS += bench-attest

.PHONY: bench-attest
bench-attest: publish-demo $(PHASE) $(INIT_BIN) $(KERNEL_CURRENT)
	scripts/bench-attest.sh $(PHASE) $(BUILD) "$$(cat $(KERNEL_CURRENT))" $(INIT_BIN) docs/benchmarks.md
