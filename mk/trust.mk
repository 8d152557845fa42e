# Trust: TUF keys, publishing and verification (owner: trust). See docs/trust.md.
#
## demo-trust  the trust round trip on a generated demo repository (keygen -> publish -> verify -> tuf-client over HTTP)

DEMO_STEPS += demo-trust

.PHONY: demo-trust
demo-trust: host
	scripts/demo-trust.sh $(PHASE) $(BUILD)
