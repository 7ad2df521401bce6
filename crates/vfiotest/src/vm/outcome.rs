//! What a run comes to: a machine's run that went wrong as a whole (a dead kernel, a signal, a
//! timeout, a hang, state left behind), the verdicts written out, and the exit code.

use std::collections::VecDeque;

use ksft::{KSFT_FAIL, KSFT_PASS, KSFT_SKIP};

use super::bench_run::{BenchContext, save_bench};
use super::boot::{BootEnd, MachineRun};
use super::config::VmConfig;
use super::console;
use super::machine::Accel;
use super::signals::signal_name;
use crate::Fatal;
use crate::reports::{Inventory, ReportArgs};
use vfiotest_report::{Emulated, Kernel, Machine};

/// What went wrong with a machine's run as a whole, if anything.
pub(super) fn problem(config: &VmConfig, run: &MachineRun) -> Option<String> {
    let console = &run.console;
    match (&console.fatal, &run.end, console.exit_code) {
        (Some(fatal), _, _) => Some(format!("the guest kernel failed: {fatal}")),
        (None, BootEnd::Signal(signal), _) => Some(format!("stopped by signal {signal} ({})", signal_name(*signal))),
        (None, BootEnd::Timeout, _) => Some(format!("the run took longer than {} s", config.timeout.as_secs())),
        (None, BootEnd::InitSilent, _) => Some(format!(
            "the guest's init never spoke on its results port (ttyS1) within {} s: the port's interrupt never \
             arrived, or the kernel never reached init (the console's tail is below)",
            super::boot::INIT_DEADLINE.as_secs()
        )),
        _ if run.console.no_iommu => Some(
            "the guest kernel found no IOMMU (/sys/class/iommu is empty): it lacks the driver for this vIOMMU, \
             or the vIOMMU didn't come up"
                .to_owned(),
        ),
        (None, BootEnd::Silent, _) => {
            Some(format!("the guest hung: no console output for {} s", config.silence.as_secs()))
        }
        (None, BootEnd::Exited, None) if !console.booted => Some(qemu_quit(&run.tail)),
        (None, _, None) => Some("the guest stopped before the suite finished".to_owned()),
        _ if !console.left_behind.is_empty() => {
            Some(format!("the suite left state behind: {}", console.left_behind.join("; ")))
        }
        _ => None,
    }
}

/// Why QEMU exited before the guest booted: its own last message, if it left one (a bad
/// `--qemu-arg`, a device it can't make).
fn qemu_quit(tail: &VecDeque<String>) -> String {
    let last_word = tail
        .iter()
        .rev()
        .filter_map(|line| line.strip_prefix(super::boot::QEMU_PREFIX))
        .find(|said| !said.contains(": warning: "));
    match last_word {
        Some(said) => format!("QEMU exited before the guest booted: {said}"),
        None => "QEMU exited before the guest booted, saying nothing".to_owned(),
    }
}

/// What the host knows of a run that the guest doesn't, for its reports.
pub(super) struct About<'a> {
    pub(super) started: &'a str,
    pub(super) qemu: &'a str,
    pub(super) viommu: &'a str,
    pub(super) kernel: &'a str,
}

pub(super) fn finish(
    config: &VmConfig,
    reports: &ReportArgs,
    about: &About,
    accel: Accel,
    runs: &[MachineRun],
    bench_context: Option<&BenchContext>,
) -> Result<i32, Fatal> {
    let bench = bench_context.is_some();
    if let (Some(context), [run]) = (bench_context, runs) {
        save_bench(run, context, accel)?;
    }
    let results: Vec<&console::TestResult> = runs.iter().flat_map(|run| &run.console.results).collect();
    if reports.any() && !bench {
        reports.write(&document(about, accel, runs))?;
    }
    if let Some((run, problem)) = runs.iter().find_map(|run| problem(config, run).map(|p| (run, p))) {
        eprintln!(
            "[vm] ---- guest console, last {} lines (all of it: {}) ----",
            run.tail.len(),
            run.log_path.display()
        );
        for line in &run.tail {
            eprintln!("{line}");
        }
        eprintln!("[vm] ----");
        // A stopped run exits as the shell reports a death by that signal: 128 + its number.
        let code = match run.end {
            BootEnd::Signal(signal) => signal_exit_code(signal),
            // Says nothing of how the kernel handles VFIO: `--bisect` skips such a commit.
            _ if !run.console.booted || run.console.no_iommu => super::kernel::UNTESTABLE,
            _ => KSFT_FAIL,
        };
        return Err(Fatal { code, message: problem });
    }
    if let Some(n) = config.slowest {
        eprintln!("[vm] the {n} slowest tests:");
        for r in console::slowest(results.iter().copied(), n) {
            eprintln!("[vm] {:>8.2} s  {}  {}", r.duration_s, r.program, r.test);
        }
    }
    let mut tally = ksft::Summary::default();
    runs.iter().for_each(|run| tally.merge(run.console.tally()));
    let (pass, skip, fail) = (tally.pass, tally.skip, tally.fail);
    let expected = match tally.xfail + tally.xpass {
        0 => String::new(),
        _ => format!(", xfail {}, xpass {}", tally.xfail, tally.xpass),
    };
    // Every machine finished (else a problem was reported above).
    let codes: Vec<i32> = runs.iter().filter_map(|run| run.console.exit_code).collect();
    let guest_code = match codes.iter().all(|&c| c == KSFT_PASS) {
        true => KSFT_PASS,
        false => codes.iter().copied().find(|&c| c != KSFT_PASS).unwrap_or(KSFT_FAIL),
    };
    let accel = accel.label();
    let verdict_at = runs.iter().filter_map(|run| run.boot_to_verdict).max();
    let machines = match runs.len() {
        1 => String::new(),
        n => format!(", {n} machines"),
    };
    let timing = verdict_at.map(|d| format!(", boot→verdict {:.1} s", d.as_secs_f64())).unwrap_or_default();
    match bench {
        true => eprintln!("[vm] bench done (guest exit {guest_code}, {accel}{timing})"),
        false => eprintln!(
            "[vm] {} tests: pass {pass}, skip {skip}, fail {fail}{expected} (guest exit {guest_code}, {accel}{machines}{timing})",
            results.len()
        ),
    }
    Ok(exit_code(fail, guest_code, results.is_empty() && !bench))
}

/// The results document of a run: the guest's inventory, with what only the host knows.
fn document(about: &About, accel: Accel, runs: &[MachineRun]) -> vfiotest_report::Results {
    let said = runs.iter().find_map(|run| run.console.inventory.clone());
    // A guest that never said what it is (it died first) still has its verdicts reported.
    let mut inventory = said.unwrap_or_else(|| Inventory {
        machine: Machine { hostname: String::new(), arch: std::env::consts::ARCH.to_owned(), emulated: None },
        kernel: Kernel { release: about.kernel.to_owned(), version: String::new(), label: None },
        modes: Vec::new(),
        devices: Vec::new(),
    });
    inventory.machine.hostname = rustix::system::uname().nodename().to_string_lossy().into_owned();
    inventory.machine.emulated =
        Some(Emulated { qemu: about.qemu.to_owned(), accel: accel.name().to_owned(), viommu: about.viommu.to_owned() });
    inventory.kernel.label = Some(about.kernel.to_owned());
    let results: Vec<console::TestResult> = runs.iter().flat_map(|run| run.console.results.iter().cloned()).collect();
    crate::reports::document(about.started.to_owned(), inventory, &results)
}

/// The run's exit code, the kselftest way: any failed test fails it; else the guest's own code
/// (a skip stays a skip); a suite run that reported no test at all is a skip.
fn exit_code(failed: u32, guest_code: i32, nothing_ran: bool) -> i32 {
    match (failed, guest_code) {
        (0, KSFT_PASS) if nothing_ran => KSFT_SKIP,
        (0, code) => code,
        _ => KSFT_FAIL,
    }
}

/// What a run stopped by `signal` exits with, as the shell reports a death by it.
pub(super) fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_quitting_at_once_is_named_by_its_own_message() {
        let tail = VecDeque::from([
            "[qemu] qemu-system-x86_64: -nonsense: invalid option".to_owned(),
            "[qemu] qemu-system-x86_64: warning: nic igb.0 has no peer".to_owned(),
        ]);
        assert_eq!(
            qemu_quit(&tail),
            "QEMU exited before the guest booted: qemu-system-x86_64: -nonsense: invalid option"
        );
        assert_eq!(qemu_quit(&VecDeque::new()), "QEMU exited before the guest booted, saying nothing");
    }

    #[test]
    fn the_exit_code_is_kselftests() {
        assert_eq!(exit_code(0, KSFT_PASS, false), KSFT_PASS);
        assert_eq!(exit_code(0, KSFT_SKIP, false), KSFT_SKIP, "the guest's skip stays");
        assert_eq!(exit_code(0, KSFT_PASS, true), KSFT_SKIP, "no test at all");
        assert_eq!(exit_code(2, KSFT_PASS, false), KSFT_FAIL, "a failed test, whatever the guest said");
        assert_eq!(exit_code(0, KSFT_FAIL, false), KSFT_FAIL, "the guest failed outside any test");
        assert_eq!(signal_exit_code(15), 143);
        assert_eq!(signal_exit_code(2), 130);
    }
}
