//! Test support shared by every crate's tests.
//!
//! - [`data_dir`]: `../shared/data` (or `$EDGEOPT_DATA`). When absent, tests print that
//!   they skipped, except under `EDGEOPT_REQUIRE_DATA=1` (set by `.ci/run`), where
//!   absence is a failure.
//! - [`python`]: the Python interpreter with the oracles (onnxruntime, onnx, numpy,
//!   ai-edge-litert, tflite-micro): `$EDGEOPT_PYTHON`, else `<workspace>/.venv/bin/python`, else
//!   `python3`. Oracle scripts live in `<workspace>/scripts/oracle/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the workspace (where Cargo.lock lives).
pub fn workspace_root() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !p.join("Cargo.lock").exists() && !p.join(".ci").exists() {
        if !p.pop() {
            return PathBuf::from(".");
        }
    }
    p
}

fn required() -> bool {
    std::env::var("EDGEOPT_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// The shared data folder, or `None` (after printing a skip notice) when it is absent.
/// Panics when absent under `EDGEOPT_REQUIRE_DATA=1`.
pub fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("EDGEOPT_DATA") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("../shared/data"),
    };
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if required() {
        panic!(
            "EDGEOPT_REQUIRE_DATA=1 but the shared data is not at {}",
            dir.display()
        );
    }
    eprintln!(
        "skipped: shared data not found at {} (set EDGEOPT_DATA)",
        dir.display()
    );
    None
}

/// A file under the data folder; `None` (skip) when the data folder is absent.
/// Panics if the data folder exists but the file does not.
pub fn data_file(rel: &str) -> Option<PathBuf> {
    let p = data_dir()?.join(rel);
    assert!(p.exists(), "missing data file {}", p.display());
    Some(p)
}

/// Path of the Python interpreter that has the oracles installed.
pub fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEOPT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Whether the oracle Python (with onnxruntime and ai_edge_litert) is usable.
/// Under `EDGEOPT_REQUIRE_DATA=1` a missing oracle panics instead of returning false.
pub fn oracle_available() -> bool {
    let ok = Command::new(python_path())
        .args(["-c", "import onnxruntime, numpy, onnx, ai_edge_litert"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if required() {
            panic!(
                "EDGEOPT_REQUIRE_DATA=1 but the oracle Python {} lacks onnxruntime/onnx/numpy/ai_edge_litert",
                python_path().display()
            );
        }
        eprintln!("skipped: oracle Python not available");
    }
    ok
}

/// Whether the oracle Python has TensorFlow Lite Micro (`tflite-micro` on PyPI, module
/// `tflite_micro`), the reference for the generated C's numerics (`scripts/oracle/tflm_run.py`).
/// Under `EDGEOPT_REQUIRE_DATA=1` a missing interpreter panics instead of returning false.
pub fn tflm_available() -> bool {
    let ok = Command::new(python_path())
        .args(["-c", "import numpy, tflite_micro"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if required() {
            panic!(
                "EDGEOPT_REQUIRE_DATA=1 but the oracle Python {} lacks tflite_micro (pip install tflite-micro)",
                python_path().display()
            );
        }
        eprintln!("skipped: TensorFlow Lite Micro (tflite_micro) not available");
    }
    ok
}

/// Runs `scripts/oracle/<script>` with `args`; `Err` holds the last line of its stderr
/// (for tests that record an oracle's refusal as a result, e.g. a model the oracle
/// cannot run).
pub fn try_oracle(script: &str, args: &[&Path]) -> Result<String, String> {
    let path = workspace_root().join("scripts/oracle").join(script);
    let out = Command::new(python_path())
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python_path().display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        // The oracle's own message comes before the Python traceback.
        let msg = lines
            .iter()
            .find(|l| !l.starts_with("Traceback") && !l.starts_with(' '))
            .or(lines.last())
            .copied()
            .unwrap_or_default();
        return Err(format!("{script}: {msg}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `scripts/oracle/<script>` with `args`; panics with its stderr on failure.
pub fn run_oracle(script: &str, args: &[&Path]) -> String {
    let path = workspace_root().join("scripts/oracle").join(script);
    let out = Command::new(python_path())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python_path().display()));
    if !out.status.success() {
        panic!(
            "oracle {} failed:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh scratch directory under the target dir (removed and re-created).
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join("edgeopt-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}
