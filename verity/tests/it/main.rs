//! verity's integration tests: the trees agree with cryptsetup's
//! `veritysetup` (Debian package cryptsetup-bin, scripts/deps-apt.list).

mod veritysetup_agrees;
