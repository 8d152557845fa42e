# Fleet boot benchmark. See docs/benchmarks.md.
#
## bench-fleet  seed + N=1,4,8,16 clients in netns, tbf 100 Mbit/s: one nginx vs the mDNS swarm -> docs/benchmarks.md
#
# Needs root (network namespaces), iproute2 (ip, tc) and nginx; knobs:
# BENCH_FLEET_MIB (64), BENCH_FLEET_RATE (100mbit), BENCH_FLEET_NODES ("1 4 8 16").

BENCH_STEPS += bench-fleet

.PHONY: bench-fleet
bench-fleet: host
	scripts/bench-fleet.sh $(PHASE) $(BUILD) docs/benchmarks.md
