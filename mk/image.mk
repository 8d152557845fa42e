# The bootable image (owner: image). See docs/image.md.
#
## kernel      Debian's kernel, unpacked (not installed) into $(BUILD)/kernel/<release>/ (KERNEL_VERSION= to pin)
## initramfs   stage-1 initramfs $(BUILD)/$(ARCH)/initramfs.img (phase-init, root.json, modules, firmware, busybox;
##             the firmware packages are fetched once into $(BUILD)/firmware)
## esp         the ESP alone, a FAT32 partition image $(BUILD)/$(ARCH)/esp.img
## image       bootable GPT disk image $(BUILD)/phase-boot-$(ARCH).img (IMAGE_SIZE=512M, DEFAULT_MODE=internet,
##             SECURE_BOOT=on: shim + Debian-signed systemd-boot, fetched into $(BUILD)/signed; off: systemd-boot alone)
## qcow2       $(BUILD)/phase-boot-$(ARCH).qcow2 (QCOW2_OPTS="--compress --cluster-size 65536 --prealloc metadata")
#
# Optional: SEED_REPO=DIR CHANNEL=stable seeds the cache partition from a TUF
# repository (verified against the demo root).

IMAGE_SIZE ?= 512M
DEFAULT_MODE ?= internet
KERNEL_VERSION ?=
SEED_REPO ?=
CHANNEL ?= stable
QCOW2_OPTS ?=
# on: the stick boots every UEFI PC, Secure Boot on (stock Microsoft keys)
# or off; off: systemd-boot alone, for custom kernels (docs/image.md).
SECURE_BOOT ?= on
# Extra kernel parameters for every boot entry (e.g. phase.debug=true).
CMDLINE_EXTRA ?=
# Private mode's Tor network: an arti configuration fragment baked into the
# initramfs (docs/tor.md "Tor in stage 1"); empty: the public Tor network.
TOR_NETWORK ?=

# mk/init.mk (included after this file) defines the same; prerequisites are
# expanded when read, so name it here too.
INIT_BIN ?= $(BUILD)/$(ARCH)/phase-init
KERNEL_CURRENT := $(BUILD)/kernel/current
INITRAMFS := $(BUILD)/$(ARCH)/initramfs.img
ESP_IMG := $(BUILD)/$(ARCH)/esp.img
IMAGE_IMG := $(BUILD)/phase-boot-$(ARCH).img
IMAGE_QCOW2 := $(BUILD)/phase-boot-$(ARCH).qcow2
DEMO_KEYS := $(BUILD)/demo-keys
DEMO_ROOT := $(DEMO_KEYS)/1.root.json
MODULES_LIST := kernel/modules-$(ARCH).list
FIRMWARE_ALLOW := kernel/firmware-missing-$(ARCH).list
ESP_TEMPLATES := esp/loader/loader.conf $(wildcard esp/loader/entries/*.conf) esp/grub/grub.cfg
# Variables that change the image bytes: a stamp rewritten only when they change.
IMAGE_VARS := $(BUILD)/$(ARCH)/.image-vars
IMAGE_VARS_TEXT := size=$(IMAGE_SIZE) mode=$(DEFAULT_MODE) seed=$(SEED_REPO) channel=$(CHANNEL) cmdline=$(CMDLINE_EXTRA) tor=$(TOR_NETWORK) secureboot=$(SECURE_BOOT)
# The signed loader set `phase image` fetched (rewritten only when a new set is made).
SIGNED_CURRENT := $(wildcard $(BUILD)/signed/current)

# The `phase` CLI runs these steps; the options every step shares:
IMAGE_COMMON = --arch $(ARCH) --build-dir $(BUILD) --kernel-version "$$(cat $(KERNEL_CURRENT))" \
  --root $(DEMO_ROOT) --templates esp --modules-list $(MODULES_LIST) \
  --firmware-allow-list $(FIRMWARE_ALLOW)
IMAGE_DISK_OPTS = --initramfs $(INITRAMFS) --size $(IMAGE_SIZE) --default-mode $(DEFAULT_MODE) \
  $(if $(filter off,$(SECURE_BOOT)),--no-secure-boot) \
  $(if $(CMDLINE_EXTRA),--append-cmdline '$(CMDLINE_EXTRA)') \
  $(if $(SEED_REPO),--seed-repo $(SEED_REPO) --channel $(CHANNEL))

TEST_PREREQS += image qcow2

ifeq ($(filter on off,$(SECURE_BOOT)),)
$(error SECURE_BOOT=$(SECURE_BOOT): expected on or off)
endif

# Only x86_64 images exist so far; say so before anything builds.
ifneq ($(filter kernel initramfs esp image qcow2 test demo,$(MAKECMDGOALS)),)
ifeq ($(ARCH),arm64)
$(error ARCH=arm64: not supported yet (needs the arm64 kernel, BOOTAA64.EFI and qemu-system-aarch64; kernel/config-arm64 lists the kernel side; see docs/image.md))
else ifneq ($(ARCH),x86_64)
$(error ARCH=$(ARCH): unknown architecture (x86_64; arm64 planned))
endif
endif

.PHONY: kernel initramfs esp image qcow2 image-arch-check image-vars

image-arch-check:
	@case "$(ARCH)" in \
	  x86_64) ;; \
	  arm64) echo "ARCH=arm64: not supported yet (needs the arm64 kernel, BOOTAA64.EFI and qemu-system-aarch64; see docs/image.md)"; exit 1 ;; \
	  *) echo "ARCH=$(ARCH): unknown architecture (x86_64; arm64 planned)"; exit 1 ;; \
	esac

kernel: image-arch-check
	scripts/fetch-kernel.sh --build $(BUILD) --arch $(ARCH) $(if $(KERNEL_VERSION),--version $(KERNEL_VERSION))

# `kernel` always runs (cheap when cached); the file keeps its mtime unless
# the release changes, so nothing downstream rebuilds for nothing.
$(KERNEL_CURRENT): kernel
	@test -s $@

# The host CLI: `host` (root Makefile) runs cargo; the binary's mtime only
# moves when cargo relinks it.
$(PHASE): host
	@test -x $@

image-vars:
	@mkdir -p $(dir $(IMAGE_VARS))
	@echo '$(IMAGE_VARS_TEXT)' | cmp -s - $(IMAGE_VARS) 2>/dev/null || echo '$(IMAGE_VARS_TEXT)' >$(IMAGE_VARS)
$(IMAGE_VARS): image-vars
	@test -f $@

# The demo trusted root (a fresh key set for this build tree).
$(DEMO_ROOT): | $(PHASE)
	$(PHASE) keygen --out $(DEMO_KEYS)
	@test -f $@ || { echo "phase keygen did not write $@"; exit 1; }

$(INITRAMFS): $(PHASE) $(INIT_BIN) $(KERNEL_CURRENT) $(DEMO_ROOT) $(MODULES_LIST) $(FIRMWARE_ALLOW) $(IMAGE_VARS) $(TOR_NETWORK) | image-arch-check
	@mkdir -p $(@D)
	$(PHASE) image --stage initramfs --out $@ --init $(INIT_BIN) $(IMAGE_COMMON) \
	  $(if $(TOR_NETWORK),--tor-network $(TOR_NETWORK))
initramfs: $(INITRAMFS)

$(ESP_IMG): $(PHASE) $(INITRAMFS) $(KERNEL_CURRENT) $(ESP_TEMPLATES) $(IMAGE_VARS) $(SIGNED_CURRENT)
	$(PHASE) image --stage esp --out $@ $(IMAGE_COMMON) $(IMAGE_DISK_OPTS)
esp: $(ESP_IMG)

$(IMAGE_IMG): $(PHASE) $(INITRAMFS) $(KERNEL_CURRENT) $(ESP_TEMPLATES) $(IMAGE_VARS) $(SIGNED_CURRENT)
	$(PHASE) image --out $@ $(IMAGE_COMMON) $(IMAGE_DISK_OPTS)
image: $(IMAGE_IMG)

# qemu-img convert of the same build (the raw image is rewritten with the
# same bytes: the build is deterministic).
$(IMAGE_QCOW2): $(IMAGE_IMG)
	$(PHASE) image --out $(IMAGE_IMG) $(IMAGE_COMMON) $(IMAGE_DISK_OPTS) --qcow2 $@ $(QCOW2_OPTS)
qcow2: $(IMAGE_QCOW2)
