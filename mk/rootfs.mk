# The target root filesystem and the demo repository (owner: target).
# See scripts/build-rootfs.sh and README.md.
#
## rootfs        target rootfs $(BUILD)/$(ARCH)/rootfs.squashfs (busybox, phase, plasmd, services.toml), no root needed
## target-initramfs  the target's initramfs: the stage-1 one (phase-init, its role from the cmdline, + modules)
## publish-demo  sign kernel, target initramfs, rootfs and the demo job into $(BUILD)/demo-repo (demo keys)

ROOTFS_SQUASHFS := $(BUILD)/$(ARCH)/rootfs.squashfs
# The target initramfs is the same file as stage 1's: phase-init (its role comes
# from phase.stage=target on the command line stage 1 gives it) + modules.
TARGET_INITRAMFS := $(INITRAMFS)
DEMO_REPO := $(BUILD)/demo-repo
DEMO_JOB := $(BUILD)/jobs/hello.wasm
DEMO_CHANNEL ?= stable
# The target's own kernel parameters (signed on the kernel target).
TARGET_CMDLINE ?= console=ttyS0,115200

.PHONY: rootfs target-initramfs publish-demo

# `plasmd` and `host` always run cargo; the binaries' mtimes only move when
# cargo relinks them, so the squashfs is rebuilt only when one changed.
$(PLASMD): plasmd
	@test -x $@
$(ROOTFS_SQUASHFS): scripts/build-rootfs.sh $(PHASE) $(PLASMD)
	scripts/build-rootfs.sh $(PHASE) $(PLASMD) $@
rootfs: $(ROOTFS_SQUASHFS)

target-initramfs: $(TARGET_INITRAMFS)

# The demo repository: a fresh release each time (versions only grow).
publish-demo: rootfs plasmd-jobs $(TARGET_INITRAMFS) $(KERNEL_CURRENT) $(DEMO_ROOT)
	$(PHASE) publish --repo $(DEMO_REPO) --keys $(DEMO_KEYS) --channel $(DEMO_CHANNEL) --arch $(ARCH) \
	  --kernel $(BUILD)/kernel/$$(cat $(KERNEL_CURRENT))/boot/vmlinuz-$$(cat $(KERNEL_CURRENT)) \
	  --initramfs $(TARGET_INITRAMFS) --rootfs $(ROOTFS_SQUASHFS) --job $(DEMO_JOB) \
	  --cmdline '$(TARGET_CMDLINE)' --release-version "demo-$$(date -u +%Y%m%d%H%M%S)" --expires 30d
	$(PHASE) verify --repo $(DEMO_REPO) --root $(DEMO_ROOT) --channel $(DEMO_CHANNEL) --arch $(ARCH)

# boot_wasm boots this rootfs with the demo job (testkit/tests/it/boot_wasm.rs).
TEST_PREREQS += rootfs plasmd-jobs
