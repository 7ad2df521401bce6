//! `vfiotest vm`: boot the emulated machine and run the suite in it.
//!
//! Host side: install what is missing, get the guest kernel (built once from Debian's
//! linux-source-7.3, cached), pack an initramfs holding this very binary, boot QEMU (one
//! machine per host core, each with its share of the programs; see `shard`), and follow each
//! serial console: TAP goes to stdout, everything else to a log, and a guest panic, oops or
//! hang ends the run as a failure with the console's tail.

mod apt;
mod bench_run;
mod boot;
pub mod config;
pub mod console;
mod initramfs;
mod kernel;
pub mod machine;
mod matrix;
mod outcome;
mod plan;
mod provision;
mod qemu;
mod signals;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use ksft::KSFT_PASS;

use crate::Fatal;
use crate::cache::Cache;
use crate::guest::protocol::Payload;
use bench_run::{BenchContext, bench_path};
use boot::{Launch, Machine, TapOut, WorkDir, probe_kvm};
use config::{Action, VmConfig, Work};
use machine::{Accel, TOPOLOGY};
use outcome::finish;

pub use config::VmArgs;

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
    let viommu_devices = config
        .viommus
        .iter()
        .map(|v| (v.qemu_device.split(',').next().unwrap_or(v.qemu_device), format!("the {} vIOMMU", v.name)));
    qemu.ensure_devices(viommu_devices)?;
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
    let session = |kernel| Session { config: &config, work, cache: &cache, qemu: &qemu, kernel };
    if !work.is_bench() {
        return match config.viommus.as_slice() {
            [viommu] => run_kernel(&session(&kernels[0]), viommu, None).map(|(code, _)| code),
            viommus => matrix::run(&session(&kernels[0]), viommus),
        };
    }
    // Each kernel's bench in turn, each kept; then each compared with the first.
    let mut saved = Vec::new();
    let mut code = KSFT_PASS;
    for (i, kernel) in kernels.iter().enumerate() {
        let path = bench_path(&config, i, kernels.len())?;
        let context = BenchContext { path: path.clone(), qemu: qemu.version.clone() };
        let (kernel_code, _) = run_kernel(&session(kernel), &config.viommus[0], Some(&context))?;
        code = code.max(kernel_code);
        saved.push(path);
    }
    if let [first, rest @ ..] = saved.as_slice() {
        let before = crate::bench::report::SavedBench::load(first).map_err(Fatal::fail)?;
        for path in rest {
            let after = crate::bench::report::SavedBench::load(path).map_err(Fatal::fail)?;
            print!("{}", crate::bench::report::ratio_table(&before, &after));
        }
    }
    Ok(code)
}

/// What every run of one `vfiotest vm` shares: the request, the cache, the emulator and the
/// kernel.
struct Session<'a> {
    config: &'a VmConfig,
    work: &'a Work,
    cache: &'a Cache,
    qemu: &'a qemu::Emulator,
    kernel: &'a Path,
}

/// One run behind one vIOMMU, ready to boot: its initramfs and its machines' shares.
struct Prepared<'a> {
    viommu: &'a machine::Viommu,
    initrd: PathBuf,
    plan: Vec<plan::Share>,
}

impl Prepared<'_> {
    fn launch<'a>(&'a self, session: &'a Session) -> Launch<'a> {
        Launch {
            qemu: session.qemu,
            viommu: self.viommu,
            kernel: session.kernel,
            initrd: &self.initrd,
            qemu_args: &session.config.qemu_args,
        }
    }

    /// How many programs its machines run in all.
    fn programs(&self) -> usize {
        self.plan.iter().map(|s| s.units.len()).sum()
    }
}

/// This very binary, which the guest runs as its init: it must be static.
fn this_binary() -> Result<Vec<u8>, Fatal> {
    let me = std::env::current_exe().map_err(|e| Fatal::fail(format!("finding this executable: {e}")))?;
    let me_bytes = fs::read(&me).map_err(|e| Fatal::fail(format!("{}: {e}", me.display())))?;
    if !initramfs::is_static_elf(&me_bytes) {
        return Err(Fatal::fail(format!(
            "{} is dynamically linked and can't run in the guest; build with the repository's .cargo/config.toml",
            me.display()
        )));
    }
    Ok(me_bytes)
}

/// Packs the initramfs for a run behind `viommu` into `scratch` and splits its programs
/// over machines.
fn prepare<'a>(
    session: &Session,
    viommu: &'a machine::Viommu,
    me: &[u8],
    scratch: &WorkDir,
    history: &plan::History,
) -> Result<Prepared<'a>, Fatal> {
    let initrd = scratch.path.join(format!("initramfs-{}.cpio", viommu.name));
    let bdfs = session.config.bdfs.iter().map(|b| b.to_string()).collect();
    initramfs::build(me.to_vec(), &Payload { bdfs, command: session.work.command_for(viommu) }, &initrd)?;
    let plan = plan::machines(session.config, session.work, history);
    Ok(Prepared { viommu, initrd, plan })
}

/// A run's end: its verdicts saved and summed up, and what each program took recorded for
/// planning later runs. Its exit code and verdicts.
fn conclude(
    session: &Session,
    prepared: &Prepared,
    accel: Accel,
    runs: Vec<boot::MachineRun>,
    history: &Mutex<plan::History>,
    bench: Option<&BenchContext>,
) -> Result<(i32, Vec<console::TestResult>), Fatal> {
    let config = session.config;
    // Behind several vIOMMUs, each one's verdicts go to a file of its own.
    let results = match config.viommus.len() {
        1 => config.results.clone(),
        _ => config.results.as_ref().map(|p| p.with_extension(format!("{}.json", prepared.viommu.name))),
    };
    let code = finish(config, results.as_deref(), accel, &runs, bench)?;
    // Only whole programs say what a program takes: a run with kselftest filters doesn't. Each
    // machine ran with its share's clock, as the accelerator allowed.
    if session.work.whole_programs {
        let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
        history.record(prepared.plan.iter().zip(&runs).flat_map(|(share, run)| {
            let clock = share.clock.under(accel);
            run.console
                .results
                .iter()
                .filter(|r| r.test == console::PROGRAM_VERDICT)
                .map(move |r| (r.program.clone(), clock, r.duration_s))
        }));
    }
    let results = runs.into_iter().flat_map(|run| run.console.results).collect();
    Ok((code, results))
}

/// The accelerator the machines run under: `auto` decided by a probe boot.
fn resolve_accel(config: &VmConfig, launch: &Launch) -> Accel {
    match config.accel {
        Accel::Auto => probe_kvm(launch),
        accel => accel,
    }
}

/// Boots `kernel` and runs the suite (or the bench) on it behind `viommu`, its machines side
/// by side.
fn run_kernel(
    session: &Session,
    viommu: &machine::Viommu,
    bench: Option<&BenchContext>,
) -> Result<(i32, Vec<console::TestResult>), Fatal> {
    let Session { config, work, cache, .. } = *session;
    let scratch = WorkDir::new(cache)?;
    let history = Mutex::new(plan::History::load(cache));
    let prepared = {
        let history = history.lock().unwrap_or_else(|p| p.into_inner());
        prepare(session, viommu, &this_binary()?, &scratch, &history)?
    };
    let launch = prepared.launch(session);
    let accel = resolve_accel(config, &launch);
    let program = work.label();
    let runs = match prepared.plan.as_slice() {
        [only] => vec![boot::boot(config, &launch, accel, cache, program, only.clock.under(accel), None)?],
        shares => {
            eprintln!("[vm] {} machines at once, programs split by their last durations", shares.len());
            let tap = Mutex::new(TapOut::live(shares.len(), prepared.programs()));
            let runs = thread::scope(|scope| {
                let machines: Vec<_> = shares
                    .iter()
                    .enumerate()
                    .map(|(index, share)| {
                        let (launch, tap) = (&launch, &tap);
                        scope.spawn(move || {
                            let machine = Machine { index, name: format!("vm{}", index + 1), units: &share.units, tap };
                            boot::boot(config, launch, accel, cache, program, share.clock.under(accel), Some(machine))
                        })
                    })
                    .collect();
                machines.into_iter().map(|m| m.join().expect("a machine's thread panicked")).collect::<Vec<_>>()
            });
            tap.lock().unwrap_or_else(|p| p.into_inner()).finish();
            runs.into_iter().collect::<Result<Vec<_>, _>>()?
        }
    };
    conclude(session, &prepared, accel, runs, &history, bench)
}
