//! The device-mapper table line of a dm-verity target, in the format of the
//! kernel's `Documentation/admin-guide/device-mapper/verity.rst`:
//!
//! ```text
//! <start> <sectors> verity <version> <dev> <hash_dev>
//!     <data_block_size> <hash_block_size> <num_data_blocks> <hash_start_block>
//!     <algorithm> <digest> <salt> [<#opt_params> <opt_params>]
//! ```
//!
//! The salt is `-` when empty. Without optional parameters a corrupted block
//! reads as an I/O error (the kernel's default mode).

use std::fmt;

use crate::{Error, Layout, Params, Tree, DIGEST_SIZE, HASH_ALGORITHM, VERSION};

/// One dm-verity table line, starting at sector 0 and mapping all data blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    data_dev: String,
    hash_dev: String,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    hash_start_block: u64,
    root_hash: [u8; DIGEST_SIZE],
    salt: Vec<u8>,
    options: Vec<String>,
}

impl Table {
    /// The table for data of `data_blocks` blocks on `data_dev` whose tree
    /// starts at hash block `hash_start_block` of `hash_dev`. Devices are
    /// paths (`/dev/loop0`) or `major:minor`, without whitespace.
    pub fn new(
        params: &Params,
        data_blocks: u64,
        hash_start_block: u64,
        root_hash: [u8; DIGEST_SIZE],
        data_dev: &str,
        hash_dev: &str,
    ) -> Result<Table, Error> {
        for (what, dev) in [("data", data_dev), ("hash", hash_dev)] {
            if dev.is_empty() || dev.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Device {
                    what,
                    dev: dev.to_string(),
                });
            }
        }
        if data_blocks == 0 {
            return Err(Error::Empty);
        }
        Ok(Table {
            data_dev: data_dev.to_string(),
            hash_dev: hash_dev.to_string(),
            data_block_size: params.data_block_size(),
            hash_block_size: params.hash_block_size(),
            data_blocks,
            hash_start_block,
            root_hash,
            salt: params.salt().to_vec(),
            options: Vec::new(),
        })
    }

    /// The table for a tree written with `layout` on `hash_dev`.
    pub fn for_tree(
        tree: &Tree,
        layout: Layout,
        data_dev: &str,
        hash_dev: &str,
    ) -> Result<Table, Error> {
        let p = tree.params();
        Table::new(
            p,
            tree.data_blocks(),
            layout.hash_start_block(p.hash_block_size()),
            *tree.root_hash(),
            data_dev,
            hash_dev,
        )
    }

    /// Adds an optional parameter (e.g. `ignore_zero_blocks`,
    /// `panic_on_corruption`), written after their count.
    pub fn option(mut self, opt: &str) -> Result<Table, Error> {
        if opt.is_empty() || opt.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Option(opt.to_string()));
        }
        self.options.push(opt.to_string());
        Ok(self)
    }

    /// Length of the mapped device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size / 512)
    }

    /// The target's parameters: the line after `<start> <sectors> verity`,
    /// the string a `DM_TABLE_LOAD` target spec carries.
    pub fn target_params(&self) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        };
        let mut s = format!(
            "{VERSION} {} {} {} {} {} {} {HASH_ALGORITHM} {} {salt}",
            self.data_dev,
            self.hash_dev,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block,
            hex::encode(self.root_hash),
        );
        if !self.options.is_empty() {
            s.push_str(&format!(
                " {} {}",
                self.options.len(),
                self.options.join(" ")
            ));
        }
        s
    }
}

/// The whole line, as `dmsetup create --table` takes it.
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0 {} verity {}", self.sectors(), self.target_params())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the kernel's verity.rst.
    #[test]
    fn renders_the_kernel_documentation_example() {
        let salt = "1234000000000000000000000000000000000000000000000000000000000000";
        let root = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076";
        let params = Params::with_hex_salt(4096, 4096, salt).unwrap();
        let mut r = [0u8; 32];
        hex::decode_to_slice(root, &mut r).unwrap();
        let t = Table::new(&params, 262144, 1, r, "/dev/sda1", "/dev/sda2").unwrap();
        assert_eq!(t.sectors(), 2097152);
        assert_eq!(
            t.to_string(),
            format!(
                "0 2097152 verity 1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256 {root} {salt}"
            )
        );
    }

    #[test]
    fn empty_salt_is_a_dash_and_options_are_counted() {
        let params = Params::new(4096, 512, Vec::new()).unwrap();
        let t = Table::new(&params, 10, 0, [0xab; 32], "7:0", "7:1")
            .unwrap()
            .option("ignore_zero_blocks")
            .unwrap()
            .option("panic_on_corruption")
            .unwrap();
        assert_eq!(
            t.target_params(),
            format!(
                "1 7:0 7:1 4096 512 10 0 sha256 {} - 2 ignore_zero_blocks panic_on_corruption",
                "ab".repeat(32)
            )
        );
        assert_eq!(t.sectors(), 80);
    }

    #[test]
    fn table_of_a_tree_starts_after_its_superblock() {
        let data = vec![3u8; 300 * 4096];
        let params = Params::new(4096, 4096, vec![1, 2]).unwrap();
        let tree = crate::build(&data[..], params).unwrap();
        let t = Table::for_tree(
            &tree,
            Layout::Superblock { uuid: [0; 16] },
            "/dev/loop0",
            "/dev/loop1",
        )
        .unwrap();
        assert_eq!(
            t.to_string(),
            format!(
                "0 2400 verity 1 /dev/loop0 /dev/loop1 4096 4096 300 1 sha256 {} 0102",
                tree.root_hex()
            )
        );
        let bare = Table::for_tree(&tree, Layout::NoSuperblock, "a", "b").unwrap();
        assert!(bare.target_params().contains(" 300 0 sha256 "));
    }

    #[test]
    fn bad_devices_and_options_are_refused() {
        let params = Params::new(4096, 4096, Vec::new()).unwrap();
        let e = Table::new(&params, 1, 1, [0; 32], "/dev/my disk", "/dev/b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "data device \"/dev/my disk\" is empty or has whitespace"
        );
        let e = Table::new(&params, 1, 1, [0; 32], "/dev/a", "").unwrap_err();
        assert_eq!(e.to_string(), "hash device \"\" is empty or has whitespace");
        assert!(matches!(
            Table::new(&params, 0, 1, [0; 32], "a", "b"),
            Err(Error::Empty)
        ));
        let t = Table::new(&params, 1, 1, [0; 32], "a", "b").unwrap();
        assert_eq!(
            t.option("a b").unwrap_err().to_string(),
            "optional parameter \"a b\" is empty or has whitespace"
        );
    }
}
