//! Test helpers shared by the workspace: netns guard, QEMU runner, fixtures.
