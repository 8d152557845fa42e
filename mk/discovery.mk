# Peer discovery: mDNS on the LAN, Kademlia DHT beyond it (owner: discovery).
# See docs/discovery.md.
#
## test-discovery  the discovery tests alone (netns LANs, DHT, python-zeroconf interop, `phase discover`)
#
# The tests need root (network namespaces), iproute2, the python venv with
# zeroconf (scripts/requirements-test.txt) and the phase CLI (PHASE_BIN);
# `make test` provides all of them through deps and host.

.PHONY: test-discovery
test-discovery: deps host
	PHASE_BIN=$(PHASE) PHASE_BUILD=$(BUILD) PHASE_VENV=$(VENV) \
	  $(CARGO) test --release --locked -p discovery -- --test-threads=2
