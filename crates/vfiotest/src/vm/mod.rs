//! `vfiotest vm`: boot the emulated machine and run the suite in it.
//!
//! Host side: install what is missing, get the guest kernel (built once from Debian's
//! linux-source-7.3, cached), pack an initramfs holding this very binary, boot QEMU (one
//! machine per host core, each with its share of the programs; see `shard`), and follow each
//! serial console: TAP goes to stdout, everything else to a log, and a guest panic, oops or
//! hang ends the run as a failure with the console's tail.

mod apt;
pub mod config;
pub mod console;
mod initramfs;
mod kernel;
pub mod machine;
mod provision;
mod qemu;
mod shard;

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ksft::{KSFT_FAIL, KSFT_PASS, KSFT_SKIP};

use crate::Fatal;
use crate::cache::Cache;
use crate::guest::protocol::{Payload, Switches};
use crate::programs::ProgramSpec;
use config::{Action, VmConfig, Work};
use console::{Console, Event, Source};
use machine::{Accel, TOPOLOGY};

pub use config::VmArgs;

/// Marks QEMU's own stderr lines in the console log.
const QEMU_PREFIX: &str = "[qemu] ";

/// How long a KVM probe boot may take before we call KVM broken (it can hang, see FACTS).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn main(args: &VmArgs) -> Result<i32, Fatal> {
    let config = VmConfig::parse(args)?;
    if let Action::Topology = config.action {
        for d in TOPOLOGY {
            println!("{}  {:<45} {}", d.bdf, d.qemu, d.role);
        }
        return Ok(KSFT_PASS);
    }
    let cache = Cache::locate();
    let build_kernel = config.kernels.is_empty() && !kernel::cached_path(&cache).exists();
    provision::ensure(build_kernel)?;
    let kernels = match config.kernels.as_slice() {
        [] => vec![kernel::ensure(&cache)?],
        given => given.iter().map(|k| kernel::check_bzimage(k)).collect::<Result<Vec<_>, _>>()?,
    };
    let qemu = match &config.qemu {
        Some(path) => qemu::Emulator::at(path)?,
        None => qemu::ensure(&cache)?,
    };
    eprintln!("[vm] {} ({})", qemu.version, qemu.binary.display());
    let work = match &config.action {
        Action::Boot(work) => work,
        Action::Topology | Action::Prepare => {
            for kernel in &kernels {
                println!("kernel: {}", kernel.display());
            }
            println!("qemu: {}", qemu.binary.display());
            return Ok(KSFT_PASS);
        }
    };
    if !work.is_bench() {
        return run_kernel(&config, work, &cache, &qemu, &kernels[0], None);
    }
    // Each kernel's bench in turn, each kept; then each compared with the first.
    let mut saved = Vec::new();
    let mut code = KSFT_PASS;
    for (i, kernel) in kernels.iter().enumerate() {
        let path = bench_path(&config, i, kernels.len())?;
        let context = BenchContext { path: path.clone(), qemu: qemu.version.clone() };
        code = code.max(run_kernel(&config, work, &cache, &qemu, kernel, Some(&context))?);
        saved.push(path);
    }
    if let [first, rest @ ..] = saved.as_slice() {
        let before = crate::bench::report::Run::load(first).map_err(Fatal::fail)?;
        for path in rest {
            let after = crate::bench::report::Run::load(path).map_err(Fatal::fail)?;
            print!("{}", crate::bench::report::ratio_table(&before, &after));
        }
    }
    Ok(code)
}

/// Where a bench run's JSON goes: `--results FILE` for a single kernel (`FILE` with the
/// kernel's number before its extension for several), else the cache's `bench/`.
fn bench_path(config: &VmConfig, index: usize, kernels: usize) -> Result<PathBuf, Fatal> {
    if let Some(path) = &config.results {
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
struct BenchContext {
    path: PathBuf,
    qemu: String,
}

/// Boots `kernel` and runs the suite (or the bench) on it.
fn run_kernel(
    config: &VmConfig,
    work: &Work,
    cache: &Cache,
    qemu: &qemu::Emulator,
    kernel: &Path,
    bench: Option<&BenchContext>,
) -> Result<i32, Fatal> {
    let me = std::env::current_exe().map_err(|e| Fatal::fail(format!("finding this executable: {e}")))?;
    let me_bytes = fs::read(&me).map_err(|e| Fatal::fail(format!("{}: {e}", me.display())))?;
    if !initramfs::is_static_elf(&me_bytes) {
        return Err(Fatal::fail(format!(
            "{} is dynamically linked and can't run in the guest; build with the repository's .cargo/config.toml",
            me.display()
        )));
    }
    let scratch = WorkDir::new(cache)?;
    let initrd = scratch.path.join("initramfs.cpio");
    let bdfs = config.bdfs.iter().map(|b| b.to_string()).collect();
    initramfs::build(me_bytes, &Payload { bdfs, command: work.command.clone() }, &initrd)?;

    let launch = Launch { qemu, viommu: &config.viommu, kernel, initrd: &initrd };
    let accel = match config.accel {
        Accel::Auto => probe_kvm(&launch),
        accel => accel,
    };
    let program = work.label();
    let mut history = shard::History::load(cache);
    let plan = plan_machines(config, work, &history);
    let runs = match plan.as_slice() {
        [only] => vec![boot(config, &launch, accel, cache, program, only.icount, None)?],
        shares => {
            eprintln!("[vm] {} machines at once, programs split by their last durations", shares.len());
            let programs = shares.iter().map(|s| s.units.len()).sum();
            let merger = Mutex::new(shard::Merger::new(shares.len(), programs, &mut std::io::stdout()));
            let runs = thread::scope(|scope| {
                let machines: Vec<_> = shares
                    .iter()
                    .enumerate()
                    .map(|(machine, share)| {
                        let (launch, merger) = (&launch, &merger);
                        scope.spawn(move || {
                            let machine = Machine { index: machine, units: &share.units, merger };
                            boot(config, launch, accel, cache, program, share.icount, Some(machine))
                        })
                    })
                    .collect();
                machines.into_iter().map(|m| m.join().expect("a machine's thread panicked")).collect::<Vec<_>>()
            });
            merger.lock().unwrap_or_else(|p| p.into_inner()).flush(&mut std::io::stdout());
            runs.into_iter().collect::<Result<Vec<_>, _>>()?
        }
    };
    let code = finish(config, accel, &runs, bench)?;
    // Only whole programs say what a program takes: a run with kselftest filters doesn't. Each
    // machine ran in the order of the plan, with its share's clock (icount is TCG's).
    if work.whole_programs {
        history.record(plan.iter().zip(&runs).flat_map(|(share, run)| {
            let icount = share.icount && accel != Accel::Kvm;
            run.console
                .results
                .iter()
                .filter(|r| r.test == console::PROGRAM_VERDICT)
                .map(move |r| (r.program.clone(), icount, r.duration_s))
        }));
    }
    Ok(code)
}

/// The programs of this run split over the machines, each with its clock: one share (all of
/// it) unless several machines are worth booting.
fn plan_machines(config: &VmConfig, work: &Work, history: &shard::History) -> Vec<shard::Share> {
    let bdfs: Vec<vfio::Bdf> = config.bdfs.iter().filter_map(|b| b.parse().ok()).collect();
    // The bench measures time: one machine, its clock real. The setup proof is one program.
    if !work.is_suite() {
        return vec![shard::Share { units: Vec::new(), icount: !work.is_bench() }];
    }
    let catalogue = crate::programs::catalogue(&work.programs, &bdfs);
    let units: Vec<shard::Unit> = catalogue
        .iter()
        .map(|p| {
            let waits = ProgramSpec::of(&p.name).is_none_or(|spec| spec.waits);
            let estimate = |icount| history.estimate(&p.name, p.tests.len(), icount, waits);
            shard::Unit { plain_s: estimate(false), icount_s: estimate(true) }
        })
        .collect();
    let mut plan = shard::plan(&units, config.jobs);
    if let [only] = plan.as_mut_slice() {
        // One machine runs everything: the guest needs no share named.
        only.units.clear();
    }
    plan
}

/// How many console logs of earlier runs are kept.
const KEPT_LOGS: usize = 20;

/// This run's own console log, `consoles/<unix time>-<pid>.log` (runs at once don't share one),
/// with `last-console.log` pointing at it. The oldest logs beyond [`KEPT_LOGS`] go.
fn console_log(cache: &Cache, machine: Option<usize>) -> Result<PathBuf, Fatal> {
    let dir = cache.consoles();
    fs::create_dir_all(&dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    let mut old: Vec<PathBuf> =
        fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    old.sort();
    for stale in old.iter().rev().skip(KEPT_LOGS - 1) {
        let _ = fs::remove_file(stale);
    }
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let suffix = machine.map(|m| format!("-vm{}", m + 1)).unwrap_or_default();
    let path = dir.join(format!("{}-{}{suffix}.log", since_epoch.as_secs(), std::process::id()));
    let last = cache.last_console();
    let _ = fs::remove_file(&last);
    let _ = std::os::unix::fs::symlink(&path, &last);
    Ok(path)
}

/// A per-run scratch directory, removed when the run ends.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new(cache: &Cache) -> Result<Self, Fatal> {
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
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a boot ended.
#[derive(Debug, PartialEq, Eq)]
enum BootEnd {
    /// QEMU exited (the guest powered off, or died).
    Exited,
    /// The whole-run timeout passed.
    Timeout,
    /// The console was silent too long.
    Silent,
    /// The KVM probe saw init.
    ProbeOk,
    /// We were told to stop (SIGINT, SIGTERM or SIGHUP).
    Signal(i32),
}

/// What a boot runs: the emulator, the guest kernel and the initramfs.
struct Launch<'a> {
    qemu: &'a qemu::Emulator,
    viommu: &'a machine::Viommu,
    kernel: &'a Path,
    initrd: &'a Path,
}

fn spawn_qemu(
    launch: &Launch,
    accel: Accel,
    icount: bool,
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
    let qemu = machine::qemu_command(launch.qemu, launch.viommu, accel, icount, &guest);
    // If we die without a chance to clean up (SIGKILL), the kernel kills QEMU too.
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(qemu.get_program()).args(qemu.get_args());
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
fn probe_kvm(launch: &Launch) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("[vm] no /dev/kvm: using TCG");
        return Accel::Tcg;
    }
    eprintln!("[vm] probing KVM (up to {} s)", PROBE_TIMEOUT.as_secs());
    let Ok((mut qemu, lines)) = spawn_qemu(launch, Accel::Kvm, false, Switches::PROBE) else {
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
fn follow(
    qemu: &mut Qemu,
    lines: &mpsc::Receiver<(Source, String)>,
    deadline: Instant,
    silence: Duration,
    console: &mut Console,
    on_line: &mut dyn FnMut(&str, &Event),
) -> BootEnd {
    let mut last_output = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok((source, line)) => {
                last_output = Instant::now();
                let (event, line) = match source {
                    Source::Results => (console.feed(&line), line),
                    Source::Console => (console.feed_console(&line), line),
                    Source::Qemu => (Event::Log, format!("{QEMU_PREFIX}{line}")),
                };
                on_line(&line, &event);
                if event == Event::ProbeOk {
                    return BootEnd::ProbeOk;
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
    }
}

/// The signals that stop a run: QEMU is killed (by `Qemu`'s drop) and the console's tail shown.
const STOP_SIGNALS: [i32; 3] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP];

/// Set to the number of the first stop signal received, once they are caught.
static STOP: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// From the first boot on, a stop signal is caught instead of killing us outright, so that QEMU
/// never outlives the run.
fn catch_stop_signals() -> Result<(), Fatal> {
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

fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// The stop signal received, if any.
fn stop_requested() -> Option<i32> {
    let signal = STOP.get()?.load(Ordering::Relaxed);
    (signal != 0).then_some(signal as i32)
}

/// One of several machines: which it is, its share of the programs, and where its TAP goes.
struct Machine<'a> {
    index: usize,
    units: &'a [usize],
    merger: &'a Mutex<shard::Merger>,
}

/// What one machine's boot left: its console, how it ended, its log.
struct Run {
    console: Console,
    end: BootEnd,
    tail: VecDeque<String>,
    boot_to_verdict: Option<Duration>,
    log_path: PathBuf,
    /// What `vfiotest bench` printed after its marker.
    bench_json: Option<String>,
}

fn boot(
    config: &VmConfig,
    launch: &Launch,
    accel: Accel,
    cache: &Cache,
    program: &str,
    icount: bool,
    machine: Option<Machine>,
) -> Result<Run, Fatal> {
    let mut console = Console::new(program);
    let log_path = console_log(cache, machine.as_ref().map(|m| m.index))?;
    let tag = machine.as_ref().map_or("[vm]".to_owned(), |m| format!("[vm {}]", m.index + 1));
    let clock = if icount && accel != Accel::Kvm { ", icount" } else { "" };
    eprintln!(
        "{tag} booting {} under {}{clock}; console log: {}",
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
    let (mut qemu, lines) = spawn_qemu(launch, accel, icount, &cmdline)?;
    let mut tail = VecDeque::new();
    let mut verdict_at = None;
    let mut bench_json = None;
    let verbose = config.verbose;
    let end = follow(&mut qemu, &lines, started + config.timeout, config.silence, &mut console, &mut |line, event| {
        let _ = writeln!(log, "{line}");
        // The bench's JSON is kept for its file, not shown.
        if let Some(json) = line.trim_end_matches('\r').strip_prefix(crate::bench::JSON_MARKER) {
            bench_json = Some(json.to_owned());
            return;
        }
        if tail.len() == 40 {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
        match event {
            Event::Tap => {
                let mut stdout = std::io::stdout().lock();
                match &machine {
                    Some(m) => m.merger.lock().unwrap_or_else(|p| p.into_inner()).line(m.index, line, &mut stdout),
                    None => {
                        let _ = writeln!(stdout, "{line}");
                        let _ = stdout.flush();
                    }
                }
            }
            Event::Note(note) => eprintln!("{tag} {note} ({:.1} s)", started.elapsed().as_secs_f64()),
            Event::Finished(code) => {
                verdict_at = Some(started.elapsed());
                if machine.is_some() {
                    eprintln!("{tag} finished, exit {code} ({:.1} s)", started.elapsed().as_secs_f64());
                }
            }
            Event::Fatal(text) => eprintln!("{tag} guest kernel: {text}"),
            Event::Log | Event::ProbeOk => {
                if verbose {
                    eprintln!("{line}");
                }
            }
        }
    });
    Ok(Run { console, end, tail, boot_to_verdict: verdict_at, log_path, bench_json })
}

/// What went wrong with a machine's run as a whole, if anything.
fn problem(config: &VmConfig, run: &Run) -> Option<String> {
    let console = &run.console;
    match (&console.fatal, &run.end, console.exit_code) {
        (Some(fatal), _, _) => Some(format!("the guest kernel failed: {fatal}")),
        (None, BootEnd::Signal(signal), _) => Some(format!("stopped by signal {signal} ({})", signal_name(*signal))),
        (None, BootEnd::Timeout, _) => Some(format!("the run took longer than {} s", config.timeout.as_secs())),
        (None, BootEnd::Silent, _) => {
            Some(format!("the guest hung: no console output for {} s", config.silence.as_secs()))
        }
        (None, _, None) => Some("the guest stopped before the suite finished".to_owned()),
        _ if !console.left_behind.is_empty() => {
            Some(format!("the suite left state behind: {}", console.left_behind.join("; ")))
        }
        _ => None,
    }
}

/// Keeps the bench's JSON from the console at `context.path`, with what only the host knows
/// (the QEMU and the accelerator) added. Says where on stderr.
fn save_bench(run: &Run, context: &BenchContext, accel: Accel) -> Result<(), Fatal> {
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

fn finish(config: &VmConfig, accel: Accel, runs: &[Run], bench_context: Option<&BenchContext>) -> Result<i32, Fatal> {
    let bench = bench_context.is_some();
    if let (Some(context), [run]) = (bench_context, runs) {
        save_bench(run, context, accel)?;
    }
    let results: Vec<&console::TestResult> = runs.iter().flat_map(|run| &run.console.results).collect();
    if let Some(path) = config.results.as_ref().filter(|_| !bench) {
        let json = serde_json::to_string_pretty(&results).expect("results serialize");
        fs::write(path, json + "\n").map_err(|e| Fatal::fail(format!("{}: {e}", path.display())))?;
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
            BootEnd::Signal(signal) => 128 + signal,
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
    Ok(match (fail, guest_code) {
        (0, KSFT_PASS) if results.is_empty() && !bench => KSFT_SKIP,
        (0, code) => code,
        _ => KSFT_FAIL,
    })
}
