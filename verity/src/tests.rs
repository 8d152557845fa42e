use super::*;

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 9) as u8)
        .collect()
}

fn tree(bytes: &[u8], dbs: u32, hbs: u32, salt: &[u8]) -> Result<Tree, Error> {
    build(bytes, Params::new(dbs, hbs, salt.to_vec()).unwrap())
}

#[test]
fn one_block_has_no_levels_and_its_salted_hash_is_the_root() {
    let d = data(4096, 1);
    let t = tree(&d, 4096, 4096, b"salt").unwrap();
    assert_eq!(t.levels(), 0);
    assert_eq!(t.hash_blocks(), 0);
    assert_eq!(*t.root_hash(), sha(&[b"salt", &d]));
    let mut dev = Vec::new();
    let n = t
        .write(&mut dev, Layout::Superblock { uuid: [9; 16] })
        .unwrap();
    assert_eq!((n, dev.len()), (4096, 4096));
    let mut bare = Vec::new();
    assert_eq!(t.write(&mut bare, Layout::NoSuperblock).unwrap(), 0);
    assert!(bare.is_empty());
}

#[test]
fn two_blocks_make_one_zero_padded_hash_block_hashed_with_the_salt_first() {
    let d = data(8192, 2);
    let t = tree(&d, 4096, 4096, b"s").unwrap();
    let mut level = vec![0u8; 4096];
    level[..32].copy_from_slice(&sha(&[b"s", &d[..4096]]));
    level[32..64].copy_from_slice(&sha(&[b"s", &d[4096..]]));
    assert_eq!(t.levels(), 1);
    assert_eq!(*t.root_hash(), sha(&[b"s", &level]));
    let mut bare = Vec::new();
    t.write(&mut bare, Layout::NoSuperblock).unwrap();
    assert_eq!(bare, level);
}

#[test]
fn level_count_and_layout_follow_the_hashes_per_block() {
    // 512-byte hash blocks hold 16 digests.
    for (blocks, levels, hash_blocks) in [
        (2u64, 1usize, 1u64),
        (16, 1, 1),
        (17, 2, 2 + 1),
        (256, 2, 16 + 1),
        (257, 3, 17 + 2 + 1),
    ] {
        let d = data(blocks as usize * 512, 3);
        let t = tree(&d, 512, 512, b"").unwrap();
        assert_eq!(
            (t.levels(), t.hash_blocks()),
            (levels, hash_blocks),
            "{blocks}"
        );
        assert_eq!(t.data_blocks(), blocks);
        // The top level, first on the device, is one block whose salted
        // hash is the root.
        let mut bare = Vec::new();
        t.write(&mut bare, Layout::NoSuperblock).unwrap();
        assert_eq!(*t.root_hash(), sha(&[b"", &bare[..512]]));
    }
}

#[test]
fn writing_in_any_pieces_gives_the_same_tree() {
    let d = data(37 * 4096, 4);
    let whole = tree(&d, 4096, 4096, b"pieces").unwrap();
    for piece in [1, 7, 4095, 4096, 4097, 100_000] {
        let mut b = Builder::new(Params::new(4096, 4096, b"pieces".to_vec()).unwrap());
        for p in d.chunks(piece) {
            b.write_all(p).unwrap();
        }
        assert_eq!(b.len(), d.len() as u64);
        assert_eq!(b.finish().unwrap(), whole, "pieces of {piece}");
    }
}

#[test]
fn the_salt_changes_every_hash() {
    let d = data(3 * 4096, 5);
    let a = tree(&d, 4096, 4096, b"a").unwrap();
    let b = tree(&d, 4096, 4096, b"b").unwrap();
    assert_ne!(a.root_hash(), b.root_hash());
}

#[test]
fn a_partial_last_block_and_empty_data_are_refused() {
    let e = tree(&data(5000, 6), 4096, 4096, b"").unwrap_err();
    assert!(matches!(
        e,
        Error::PartialBlock {
            len: 5000,
            block: 4096
        }
    ));
    assert_eq!(
        e.to_string(),
        "data is 5000 bytes, not a whole number of 4096-byte data blocks"
    );
    assert!(matches!(tree(&[], 4096, 4096, b""), Err(Error::Empty)));
}

#[test]
fn bad_parameters_name_what_is_wrong() {
    let e = Params::new(4000, 4096, vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "data block size 4000 is not a power of two from 512 to 65536"
    );
    let e = Params::new(4096, 256, vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "hash block size 256 is not a power of two from 512 to 65536"
    );
    let e = Params::new(4096, 4096, vec![0; 257]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "salt is 257 bytes, at most 256 fit the superblock"
    );
    let e = Params::with_hex_salt(4096, 4096, "abc").unwrap_err();
    assert_eq!(
        e.to_string(),
        "salt \"abc\" is not an even number of hex digits"
    );
    assert_eq!(
        Params::with_hex_salt(4096, 4096, "00FF").unwrap().salt(),
        &[0, 255]
    );
}

#[test]
fn superblock_round_trips_and_refuses_what_it_does_not_know() {
    let t = tree(&data(3 * 4096, 7), 4096, 4096, &[0xab; 32]).unwrap();
    let sb = t.superblock([3; 16]);
    let bytes = sb.to_bytes();
    assert_eq!(&bytes[..8], b"verity\0\0");
    assert_eq!(&bytes[32..39], b"sha256\0");
    assert_eq!(Superblock::parse(&bytes).unwrap(), sb);
    assert_eq!(sb.params().unwrap(), *t.params());

    assert!(matches!(
        Superblock::parse(&bytes[..100]),
        Err(SuperblockError::Short(100))
    ));
    let mut bad = bytes;
    bad[0] = b'V';
    assert!(matches!(
        Superblock::parse(&bad),
        Err(SuperblockError::Signature)
    ));
    let mut bad = bytes;
    bad[12] = 0;
    assert!(Superblock::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("hash type 0"));
    let mut bad = bytes;
    bad[32..38].copy_from_slice(b"sha512");
    assert!(Superblock::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("\"sha512\""));
    let mut bad = bytes;
    bad[64..68].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        Superblock::parse(&bad),
        Err(SuperblockError::Params(Error::BlockSize {
            what: "data",
            size: 1000
        }))
    ));
}

#[test]
fn device_length_counts_the_superblock_block() {
    let t = tree(&data(200 * 4096, 8), 4096, 4096, b"x").unwrap();
    assert_eq!(t.hash_blocks(), 2 + 1);
    assert_eq!(t.device_len(Layout::NoSuperblock), 3 * 4096);
    let sb = Layout::Superblock { uuid: [0; 16] };
    assert_eq!(sb.hash_start_block(4096), 1);
    assert_eq!(sb.hash_start_block(512), 1);
    assert_eq!(t.device_len(sb), 4 * 4096);
    let mut dev = Vec::new();
    t.write(&mut dev, sb).unwrap();
    assert_eq!(dev.len() as u64, t.device_len(sb));
    assert!(dev[512..4096].iter().all(|&b| b == 0));
}
