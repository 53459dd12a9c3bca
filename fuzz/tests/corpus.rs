//! Runs every committed corpus input through its fuzz entry point.
//!
//! This is how the fuzz targets run where cargo-fuzz (nightly, libFuzzer) is
//! not available: each file in `corpus/<target>/` is fed to the same function
//! the fuzzer calls. A panic fails the test and names the file.

use std::path::Path;

#[test]
fn corpora_do_not_panic() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())).join("corpus");
    let mut total = 0usize;
    for (name, target) in epic_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {} for target {name}: {e}", dir.display()));
        let mut count = 0usize;
        for entry in entries {
            let path = entry.expect("readable corpus entry").path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).expect("readable corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "target {name} panicked on {}", path.display());
            count += 1;
        }
        assert!(count > 0, "target {name} has an empty corpus in {}", dir.display());
        total += count;
    }
    println!("ran {total} corpus inputs");
}
