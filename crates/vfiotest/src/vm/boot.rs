//! Booting one machine: the QEMU process with its three channels (console, QEMU's messages,
//! the results port), following them until the guest ends, hangs or dies, and the KVM probe.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::config::VmConfig;
use super::console::{Console, Event, Source};
use super::machine::{self, Accel, Clock};
use super::qemu;
use super::signals::{catch_stop_signals, stop_requested};
use crate::Fatal;
use crate::cache::Cache;
use crate::guest::protocol::Switches;

/// Marks QEMU's own stderr lines in the console log.
pub(super) const QEMU_PREFIX: &str = "[qemu] ";

/// How long the guest's init may take to say anything on the results port: it boots in 2–5 s
/// under TCG, so two minutes means its port's interrupt never came (or the kernel never got
/// to init), not a slow machine.
pub(super) const INIT_DEADLINE: Duration = Duration::from_secs(120);

/// How long the console is followed after the kernel reports its death or a stall, so the
/// report's trace lands in the log.
const FATAL_GRACE: Duration = Duration::from_secs(10);

/// How long a KVM probe boot may take before we call KVM broken: on some hosts KVM's
/// emulation fails and the guest hangs instead of exiting.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many console logs of earlier runs are kept.
pub(super) const KEPT_LOGS: usize = 20;

/// This run's own console log, `consoles/<unix time>-<pid>.log` (runs at once don't share one),
/// with `last-console.log` pointing at it. The oldest logs beyond [`KEPT_LOGS`] go.
pub(super) fn console_log(cache: &Cache, machine: Option<&str>) -> Result<PathBuf, Fatal> {
    let dir = cache.consoles();
    fs::create_dir_all(&dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    let mut old: Vec<PathBuf> =
        fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    old.sort();
    for stale in old.iter().rev().skip(KEPT_LOGS - 1) {
        let _ = fs::remove_file(stale);
    }
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let suffix = machine.map(|m| format!("-{m}")).unwrap_or_default();
    let path = dir.join(format!("{}-{}{suffix}.log", since_epoch.as_secs(), std::process::id()));
    let last = cache.last_console();
    let _ = fs::remove_file(&last);
    let _ = std::os::unix::fs::symlink(&path, &last);
    Ok(path)
}

/// A per-run scratch directory, removed when the run ends.
pub(super) struct WorkDir {
    pub(super) path: PathBuf,
}

impl WorkDir {
    pub(super) fn new(cache: &Cache) -> Result<Self, Fatal> {
        let path = cache.run_dir(std::process::id());
        fs::create_dir_all(&path).map_err(|e| Fatal::fail(format!("{}: {e}", path.display())))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// QEMU, killed if we leave early.
pub(super) struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a boot ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BootEnd {
    /// QEMU exited (the guest powered off, or died).
    Exited,
    /// The whole-run timeout passed.
    Timeout,
    /// The console was silent too long.
    Silent,
    /// The guest's init never said a word on the results port, though the kernel may have
    /// been talking on its console.
    InitSilent,
    /// The kernel said it died or stalled; the boot was ended a little later, once its
    /// report had arrived.
    KernelFailed,
    /// The KVM probe saw init.
    ProbeOk,
    /// We were told to stop (SIGINT, SIGTERM or SIGHUP).
    Signal(i32),
}

/// What a boot runs: the emulator, the guest kernel and the initramfs.
pub(super) struct Launch<'a> {
    pub(super) qemu: &'a qemu::Emulator,
    pub(super) viommu: &'a machine::Viommu,
    pub(super) kernel: &'a Path,
    pub(super) initrd: &'a Path,
    /// The user's own QEMU arguments, after ours.
    pub(super) qemu_args: &'a [String],
}

pub(super) fn spawn_qemu(
    launch: &Launch,
    accel: Accel,
    clock: Clock,
    cmdline: &str,
) -> Result<(Qemu, mpsc::Receiver<(Source, String)>), Fatal> {
    catch_stop_signals()?;
    // Each machine gets its own nvme disk beside the initramfs, gone with the run's directory.
    static DISKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DISKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let disk = launch.initrd.with_file_name(format!("nvme-{n}.img"));
    fs::File::create(&disk)
        .and_then(|f| f.set_len(machine::DISK_BYTES))
        .map_err(|e| Fatal::fail(format!("{}: {e}", disk.display())))?;
    // The results port goes into a pipe of ours: QEMU opens its write end by /dev/fd/N, which
    // it inherits; we close ours once it runs, so the read end ends when QEMU does. Machines
    // start from several threads: one at a time, so no QEMU inherits another's write end.
    static SPAWNING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|p| p.into_inner());
    let (results, results_writer) = std::io::pipe().map_err(|e| Fatal::fail(format!("pipe: {e}")))?;
    rustix::io::fcntl_setfd(&results_writer, rustix::io::FdFlags::empty())
        .map_err(|e| Fatal::fail(format!("fcntl(F_SETFD): {e}")))?;
    let results_path = PathBuf::from(format!("/dev/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&results_writer)));
    let guest = machine::Guest {
        kernel: launch.kernel,
        initrd: launch.initrd,
        disk: &disk,
        results: &results_path,
        extra_cmdline: cmdline,
    };
    let mut qemu = machine::qemu_command(launch.qemu, launch.viommu, accel, clock, &guest);
    qemu.args(launch.qemu_args);
    // If we die without a chance to clean up (SIGKILL), the kernel kills QEMU too.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(qemu.get_program()).args(qemu.get_args());
    for (key, value) in qemu.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Fatal::fail(format!("starting {}: {e}", launch.qemu.binary.display())))?;
    drop(results_writer);
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // The kernel's console is QEMU's stdout, its own messages its stderr, the results port our
    // pipe: three channels, never mixed.
    let streams = [
        (Box::new(stdout) as Box<dyn std::io::Read + Send>, Source::Console),
        (Box::new(stderr), Source::Qemu),
        (Box::new(results), Source::Results),
    ];
    for (stream, source) in streams {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                if tx.send((source, String::from_utf8_lossy(&line).into_owned())).is_err() {
                    break;
                }
            }
        });
    }
    Ok((Qemu(child), rx))
}

/// Boots the guest once with `vfiotest.probe` under KVM; KVM counts as working only if init
/// answers within the probe timeout.
pub(super) fn probe_kvm(launch: &Launch) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("[vm] no /dev/kvm: using TCG");
        return Accel::Tcg;
    }
    eprintln!("[vm] probing KVM (up to {} s)", PROBE_TIMEOUT.as_secs());
    let Ok((mut qemu, lines)) = spawn_qemu(launch, Accel::Kvm, Clock::Real, Switches::PROBE) else {
        return Accel::Tcg;
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut console = Console::new("probe");
    let end = follow(&mut qemu, &lines, deadline, PROBE_TIMEOUT, &mut console, &mut |_, _| {});
    if end == BootEnd::ProbeOk {
        eprintln!("[vm] KVM works: using it");
        Accel::Kvm
    } else {
        eprintln!("[vm] KVM did not boot the guest: using TCG");
        Accel::Tcg
    }
}

/// Reads console lines until QEMU exits, the probe answers, or a timeout passes.
pub(super) fn follow(
    qemu: &mut Qemu,
    lines: &mpsc::Receiver<(Source, String)>,
    deadline: Instant,
    silence: Duration,
    console: &mut Console,
    on_line: &mut dyn FnMut(&str, &Event),
) -> BootEnd {
    let (started, mut last_output, mut init_spoke) = (Instant::now(), Instant::now(), false);
    let mut fatal_at: Option<Instant> = None;
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok((source, line)) => {
                last_output = Instant::now();
                init_spoke |= source == Source::Results;
                let (event, line) = match source {
                    Source::Results => (console.feed(&line), line),
                    Source::Console => (console.feed_console(&line), line),
                    Source::Qemu => (Event::Log, format!("{QEMU_PREFIX}{line}")),
                };
                on_line(&line, &event);
                if event == Event::ProbeOk {
                    return BootEnd::ProbeOk;
                }
                if matches!(event, Event::Fatal(_)) {
                    fatal_at.get_or_insert_with(Instant::now);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = qemu.0.wait();
                return BootEnd::Exited;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(signal) = stop_requested() {
            return BootEnd::Signal(signal);
        }
        if Instant::now() >= deadline {
            return BootEnd::Timeout;
        }
        if last_output.elapsed() >= silence {
            return BootEnd::Silent;
        }
        if !init_spoke && started.elapsed() >= INIT_DEADLINE.min(silence) {
            return BootEnd::InitSilent;
        }
        // A stalled kernel can keep reporting the stall for as long as we listen.
        if fatal_at.is_some_and(|at| at.elapsed() >= FATAL_GRACE) {
            return BootEnd::KernelFailed;
        }
    }
}

/// One of several machines: which it is among its run's (its slot in the merged TAP), what
/// it is called, its share of the programs, and where its TAP goes.
pub(super) struct Machine<'a> {
    pub(super) index: usize,
    /// `vm2`, or `intel-vm2` in the vIOMMU matrix: its messages' tag and its log's suffix.
    pub(super) name: String,
    pub(super) units: &'a [usize],
    pub(super) tap: &'a Mutex<TapOut>,
}

/// Where the TAP of one run's machines goes, merged into one document: to stdout as it comes,
/// or held until the run ends (in the matrix, where several runs go on at once and each
/// vIOMMU's document is printed whole).
pub(super) struct TapOut {
    merger: ksft::Merger,
    held: Option<Vec<u8>>,
}

impl TapOut {
    /// A document of `programs` programs from `machines` machines, streamed to stdout.
    pub(super) fn live(machines: usize, programs: usize) -> Self {
        let merger = ksft::Merger::new(crate::programs::COLLECTION, machines, programs, &mut std::io::stdout());
        Self { merger, held: None }
    }

    /// The same, held until [`TapOut::finish`].
    pub(super) fn held(machines: usize, programs: usize) -> Self {
        let mut held = Vec::new();
        let merger = ksft::Merger::new(crate::programs::COLLECTION, machines, programs, &mut held);
        Self { merger, held: Some(held) }
    }

    fn line(&mut self, machine: usize, line: &str) {
        match &mut self.held {
            Some(held) => self.merger.line(machine, line, held),
            None => self.merger.line(machine, line, &mut std::io::stdout().lock()),
        }
    }

    /// Writes what is left, and a held document whole, to stdout.
    pub(super) fn finish(&mut self) {
        let mut stdout = std::io::stdout().lock();
        match &mut self.held {
            Some(held) => {
                self.merger.flush(held);
                let _ = stdout.write_all(held);
                held.clear();
            }
            None => self.merger.flush(&mut stdout),
        }
        let _ = stdout.flush();
    }
}

/// What one machine's boot left: its console, how it ended, its log.
pub(super) struct MachineRun {
    pub(super) console: Console,
    pub(super) end: BootEnd,
    pub(super) tail: VecDeque<String>,
    pub(super) boot_to_verdict: Option<Duration>,
    pub(super) log_path: PathBuf,
    /// What `vfiotest bench` printed after its marker.
    pub(super) bench_json: Option<String>,
}

pub(super) fn boot(
    config: &VmConfig,
    launch: &Launch,
    accel: Accel,
    cache: &Cache,
    program: &str,
    clock: Clock,
    machine: Option<Machine>,
) -> Result<MachineRun, Fatal> {
    let mut console = Console::new(program);
    let log_path = console_log(cache, machine.as_ref().map(|m| m.name.as_str()))?;
    let tag = machine.as_ref().map_or("[vm]".to_owned(), |m| format!("[{}]", m.name));
    let clock_label = if clock == Clock::Icount { ", icount" } else { "" };
    eprintln!(
        "{tag} booting {} under {}{clock_label}; console log: {}",
        launch.kernel.display(),
        accel.label(),
        log_path.display()
    );
    let mut log = fs::File::create(&log_path).map_err(|e| Fatal::fail(format!("{}: {e}", log_path.display())))?;
    let started = Instant::now();
    let units = machine.as_ref().map(|m| {
        let list: Vec<String> = m.units.iter().map(usize::to_string).collect();
        Switches::units_word(&list.join(","))
    });
    let cmdline = [config.append.as_deref(), units.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let (mut qemu, lines) = spawn_qemu(launch, accel, clock, &cmdline)?;
    let mut tail = VecDeque::new();
    let mut verdict_at = None;
    let mut bench_json = None;
    let verbose = config.verbose;
    let end = follow(&mut qemu, &lines, started + config.timeout, config.silence, &mut console, &mut |line, event| {
        let _ = writeln!(log, "{line}");
        if let Event::BenchJson(json) = event {
            bench_json = Some(json.clone());
            return;
        }
        if tail.len() == 40 {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
        match event {
            // The TAP's lock is taken before stdout's, always: TapOut writes to stdout under it.
            Event::Tap => match &machine {
                Some(m) => m.tap.lock().unwrap_or_else(|p| p.into_inner()).line(m.index, line),
                None => {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
            },
            Event::Note(note) => eprintln!("{tag} {note} ({:.1} s)", started.elapsed().as_secs_f64()),
            Event::Finished(code) => {
                verdict_at = Some(started.elapsed());
                if machine.is_some() {
                    eprintln!("{tag} finished, exit {code} ({:.1} s)", started.elapsed().as_secs_f64());
                }
            }
            Event::Fatal(text) => eprintln!("{tag} guest kernel: {text}"),
            Event::Log | Event::ProbeOk | Event::BenchJson(_) => {
                if verbose {
                    eprintln!("{line}");
                }
            }
        }
    });
    Ok(MachineRun { console, end, tail, boot_to_verdict: verdict_at, log_path, bench_json })
}
