//! Initramfs, ESP and GPT disk image writers (placeholder until issue 5 lands).
