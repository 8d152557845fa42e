# The public TUF conformance suite against `phase tuf-client` (owner: trust).
# See docs/trust.md ("Conformance").
#
## conformance  the TUF conformance suite (../shared/vendor/tuf-conformance) against phase tuf-client (part of `make test`)
#
# TUF_CONFORMANCE=DIR runs another copy of the suite. Without the suite the
# target prints one line saying it was not run and where to get it.

TUF_CONFORMANCE ?= $(CURDIR)/../shared/vendor/tuf-conformance

TEST_PREREQS += conformance

.PHONY: conformance
conformance: host
	@# silent: without the suite the target prints exactly one line
	@TUF_CONFORMANCE=$(TUF_CONFORMANCE) scripts/conformance.sh $(PHASE) $(VENV) $(BUILD)/conformance
