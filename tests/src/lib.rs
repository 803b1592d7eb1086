//! Helpers for the end-to-end tests of the `pql` binary, and ([`stack`]) of the pipeline on the
//! local stack.
//!
//! The binary belongs to another package (`pql-cli`), so Cargo does not hand its path to these
//! tests. It is built (or found up to date) once per test process with
//! `cargo build -p pql-cli --bin pql` through escargot, which also guarantees the tests never
//! run a stale binary.

pub mod stack;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use flate2::write::GzEncoder;
use flate2::Compression;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// Path of the freshly built `pql` binary.
pub fn pql_path() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let run = escargot::CargoBuild::new()
            .manifest_path(root().join("Cargo.toml"))
            .package("pql-cli")
            .bin("pql")
            .current_release()
            .current_target()
            .run()
            .unwrap_or_else(|e| panic!("cannot build the pql binary: {e}"));
        run.path().to_path_buf()
    })
}

/// A `pql` command, run from the workspace root.
pub fn pql() -> Command {
    let mut cmd = Command::new(pql_path());
    cmd.current_dir(root());
    cmd
}

/// The shipped example definition.
pub fn example_definition() -> PathBuf {
    root().join("examples/definition.toml")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Writes a gzip-compressed copy of `text`.
pub fn write_gzip(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut gz = GzEncoder::new(file, Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    path
}

/// Runs `pql` with `args`, expects success, and parses stdout as one JSON document.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let output = pql().args(args).output().expect("pql runs");
    assert!(
        output.status.success(),
        "pql {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
