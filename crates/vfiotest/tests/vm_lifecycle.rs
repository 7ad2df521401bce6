//! A stopped `vfiotest vm` takes its QEMU with it: SIGTERM and SIGINT during a run end it with
//! the console's tail and the shell's exit code for that signal (143, 130), and no QEMU is left.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use vfiotest::guest::protocol::GuestMark;

#[path = "../../../tests-support/trial.rs"]
mod trial;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

fn stop_during_run(signal: Signal, expected_code: i32) {
    let mut vm = Command::new(env!("CARGO_BIN_EXE_vfiotest"))
        .args(["vm", "--device", "0000:00:03.0", "--", "vfio_dma_mapping_mmio_test"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vfiotest vm");
    // The run's initramfs lives in run-<pid>/ (one per vIOMMU), and QEMU's command line names it.
    let marker = format!("run-{}/initramfs-", vm.id());
    let mut stderr = BufReader::new(vm.stderr.take().expect("piped")).lines();
    let started = Instant::now();
    // The guest's Begin mark, as the runner shows it: the suite is running.
    let begun = format!("[vm] {}", GuestMark::Begin.note());
    for line in stderr.by_ref() {
        let line = line.expect("stderr is text");
        if line.starts_with(&begun) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the guest never began the suite");
    }
    assert!(!processes_mentioning(&marker).is_empty(), "QEMU runs while the suite does");
    kill_process(Pid::from_child(&vm), signal).expect("signal vfiotest");
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let status = vm.wait().expect("wait for vfiotest");
    assert_eq!(status.code(), Some(expected_code), "exit status after {signal:?}; stderr:\n{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("guest console, last")), "the console tail is shown:\n{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("stopped by signal")), "the reason is said:\n{}", rest.join("\n"));
    assert!(processes_mentioning(&marker).is_empty(), "QEMU outlived vfiotest after {signal:?}");
}

fn sigterm_stops_the_run() {
    stop_during_run(Signal::TERM, 143);
    println!("vm_lifecycle: SIGTERM stops the run, shows the console and leaves no QEMU");
}

fn sigint_stops_the_run() {
    stop_during_run(Signal::INT, 130);
    println!("vm_lifecycle: SIGINT stops the run, shows the console and leaves no QEMU");
}

fn main() {
    trial::main(vec![
        trial::check("sigterm_stops_the_run", sigterm_stops_the_run),
        trial::check("sigint_stops_the_run", sigint_stops_the_run),
    ]);
}
