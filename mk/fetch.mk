# Data plane: CAS, verified multi-peer fetch, peer server (owner: fetch).
# See docs/fetcher.md.
#
## bench-fetch  1 GiB over loopback: nginx+curl anchor vs phase serve/fetch, nginx mirror, 3 peers -> docs/benchmarks.md

BENCH_STEPS += bench-fetch

.PHONY: bench-fetch
bench-fetch: host
	scripts/bench-fetch.sh $(PHASE) $(BUILD) docs/benchmarks.md
