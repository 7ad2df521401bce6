//! The bench as the guest's payload: where each kernel's results go, and what the host adds to
//! them.

use std::fs;
use std::path::PathBuf;

use super::boot::MachineRun;
use super::config::VmConfig;
use super::machine::Accel;
use crate::Fatal;
use crate::cache::Cache;

/// Where a bench run's JSON goes: `--results FILE` for a single kernel (`FILE` with the
/// kernel's number before its extension for several), else the cache's `bench/`.
pub(super) fn bench_path(config: &VmConfig, index: usize, kernels: usize) -> Result<PathBuf, Fatal> {
    if let Some(path) = &config.reports.results {
        return Ok(match kernels {
            1 => path.clone(),
            _ => path.with_extension(format!("{index}.json")),
        });
    }
    let dir = Cache::locate().bench();
    fs::create_dir_all(&dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let path = dir.join(format!("{stamp}-{index}.json"));
    // `latest.json` names the newest run (of the last kernel, with several).
    let _ = fs::remove_file(dir.join("latest.json"));
    let _ = std::os::unix::fs::symlink(&path, dir.join("latest.json"));
    Ok(path)
}

/// What the host adds to a bench run's JSON, and where it keeps it.
pub(super) struct BenchContext {
    pub(super) path: PathBuf,
    pub(super) qemu: String,
}

/// Keeps the bench's JSON from the console at `context.path`, with what only the host knows
/// (the QEMU and the accelerator) added. Says where on stderr.
pub(super) fn save_bench(run: &MachineRun, context: &BenchContext, accel: Accel) -> Result<(), Fatal> {
    let Some(json) = &run.bench_json else { return Ok(()) };
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| Fatal::fail(format!("the bench's JSON: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("qemu".into(), context.qemu.clone().into());
        object.insert("accel".into(), accel.label().into());
    }
    let path = &context.path;
    fs::write(path, format!("{value}\n")).map_err(|e| Fatal::fail(format!("{}: {e}", path.display())))?;
    eprintln!("[vm] bench results: {}", path.display());
    Ok(())
}
