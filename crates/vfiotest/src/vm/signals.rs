//! The signals that stop a run: from the first boot on they are caught, so QEMU never outlives
//! the run and the console's tail is shown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::Fatal;

/// The signals that stop a run: QEMU is killed (by `Qemu`'s drop) and the console's tail shown.
pub(super) const STOP_SIGNALS: [i32; 3] =
    [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP];

/// Set to the number of the first stop signal received, once they are caught.
static STOP: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// From the first boot on, a stop signal is caught instead of killing us outright, so that QEMU
/// never outlives the run.
pub(super) fn catch_stop_signals() -> Result<(), Fatal> {
    if STOP.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicUsize::new(0));
    for signal in STOP_SIGNALS {
        signal_hook::flag::register_usize(signal, Arc::clone(&flag), signal as usize)
            .map_err(|e| Fatal::fail(format!("catching signal {signal}: {e}")))?;
    }
    let _ = STOP.set(flag);
    Ok(())
}

pub(super) fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// The stop signal received, if any.
pub(super) fn stop_requested() -> Option<i32> {
    let signal = STOP.get()?.load(Ordering::Relaxed);
    (signal != 0).then_some(signal as i32)
}
