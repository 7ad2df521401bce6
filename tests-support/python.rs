//! The outside checkers some tests need, which come from PyPI: KCIDB's own schema validator
//! (`kcidb-io`) and a YAML parser (PyYAML). They live in a virtual environment in vfiotest's
//! cache, made once from the machine's own pip configuration.

use std::path::PathBuf;
use std::process::Command;

/// What the environment holds, pinned so a check means the same on every machine.
const REQUIREMENTS: &[&str] = &["kcidb-io==141", "PyYAML==6.0.2"];

/// The environment's python, made (or completed) if it isn't there yet.
pub fn python() -> PathBuf {
    let venv = vfiotest::cache::Cache::locate().root().join("python");
    let python = venv.join("bin/python");
    let stamp = venv.join(format!("ready-{}", REQUIREMENTS.join(",")));
    if stamp.exists() {
        return python;
    }
    eprintln!("[test] making {} with {}", venv.display(), REQUIREMENTS.join(" "));
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "python3 -m venv {} failed: install python3 and python3-venv",
        venv.display()
    );
    let installed = Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(REQUIREMENTS).status();
    assert!(installed.is_ok_and(|s| s.success()), "pip install {} failed", REQUIREMENTS.join(" "));
    std::fs::write(&stamp, "").expect("mark the environment ready");
    python
}

/// Runs `code` with the environment's python and `args`; its stdout, or a panic with its stderr.
pub fn run(code: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(code).args(args).output().expect("run python");
    assert!(out.status.success(), "python said: {}", String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8(out.stdout).expect("python prints UTF-8")
}
