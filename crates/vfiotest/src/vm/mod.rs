//! `vfiotest vm`: boot the emulated machine and run the suite in it.
//!
//! Host side: install what is missing, get the guest kernel (`kernel`: built once from Debian's
//! linux-source-7.3 and cached, or from the user's tree, another Debian version or patches),
//! pack an initramfs holding this very binary, boot QEMU (one machine per host core, each with
//! its share of the programs; see `plan`), and follow each serial console: TAP goes to stdout,
//! everything else to a log, and a guest panic, oops or hang ends the run as a failure with the
//! console's tail. Several kernels run in turn, and the verdicts that differ are listed.

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
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;

use ksft::{KSFT_FAIL, KSFT_PASS, KSFT_SKIP};

use crate::Fatal;
use crate::cache::Cache;
use crate::guest::protocol::Payload;
use bench_run::{BenchContext, bench_path};
use boot::{Launch, Machine, TapOut, WorkDir, probe_kvm};
use config::{Action, VmConfig, Work};
use kernel::{Kernel, UNTESTABLE};
use machine::{Accel, TOPOLOGY};
use matrix::{Cell, Column};
use outcome::finish;

pub use config::VmArgs;

pub fn main(args: &VmArgs) -> Result<i32, Fatal> {
    let config = VmConfig::parse(args).map_err(|e| match args.bisect {
        true => Fatal { code: BISECT_STOP, ..e },
        false => e,
    })?;
    let outcome = run(&config);
    match config.bisect {
        true => bisect_outcome(outcome),
        // A kernel that didn't build or boot, or a host that can't run the machine, is a
        // failure like any other.
        false => outcome.map_err(|e| match e.code {
            UNTESTABLE | BISECT_STOP => Fatal { code: KSFT_FAIL, ..e },
            _ => e,
        }),
    }
}

/// The exit code `git bisect run` reads: 0 good, 1 bad, 125 for a commit that can't be tested
/// (the kernel doesn't build or boot, or every chosen test SKIPs), and 255 to stop bisecting
/// when the run itself can't go on (a bad argument, no QEMU): no commit is to blame for that.
fn bisect_outcome(outcome: Result<i32, Fatal>) -> Result<i32, Fatal> {
    match outcome {
        Ok(KSFT_PASS) => Ok(KSFT_PASS),
        Ok(KSFT_SKIP) => Err(Fatal { code: UNTESTABLE, message: "every chosen test SKIPped: untestable".to_owned() }),
        // A signal's code (128 + N) stops the bisection too.
        Ok(code) if code > 128 => Ok(code),
        Ok(_) => Ok(KSFT_FAIL),
        Err(e) if e.code == KSFT_SKIP => Err(Fatal { code: UNTESTABLE, ..e }),
        Err(e) => Err(e),
    }
}

/// A failure of the host, before any kernel is tried: under `--bisect` it stops the bisection.
fn cant_run(e: Fatal) -> Fatal {
    Fatal { code: BISECT_STOP, ..e }
}

/// What `--bisect` exits with when the run itself can't go on: `git bisect run` stops.
pub const BISECT_STOP: i32 = 255;

fn run(config: &VmConfig) -> Result<i32, Fatal> {
    if let Action::Topology = config.action {
        for d in TOPOLOGY {
            println!("{}  {:<45} {}", d.bdf, d.qemu, d.role);
        }
        return Ok(KSFT_PASS);
    }
    let cache = Cache::locate();
    let builds = config.kernels.iter().any(|k| k.may_build(&cache, &config.kernel_config));
    provision::ensure(builds).map_err(cant_run)?;
    let qemu = match &config.qemu {
        Some(path) => qemu::Emulator::at(path).map_err(|e| Fatal { message: format!("--qemu {}", e.message), ..e }),
        None => qemu::ensure(&cache),
    }
    .map_err(cant_run)?;
    eprintln!("[vm] {} ({})", qemu.version, qemu.binary.display());
    let viommu_devices = config
        .viommus
        .iter()
        .map(|v| (v.qemu_device.split(',').next().unwrap_or(v.qemu_device), format!("the {} vIOMMU", v.name)));
    qemu.ensure_devices(viommu_devices).map_err(cant_run)?;
    // Whatever keeps a kernel from being built says nothing of how it behaves.
    let get = |source| {
        kernel::get(&cache, source, &config.kernel_config, config.keep_builds)
            .map_err(|e| Fatal { code: UNTESTABLE, ..e })
    };
    let work = match &config.action {
        Action::Boot(work) => work,
        Action::Topology | Action::Prepare => {
            for source in &config.kernels {
                println!("kernel: {}", get(source)?.bzimage.display());
            }
            println!("qemu: {}", qemu.binary.display());
            return Ok(KSFT_PASS);
        }
    };
    if work.is_bench() {
        // Each kernel's bench in turn, each kept; then each compared with the first.
        let kernels = config.kernels.iter().map(get).collect::<Result<Vec<_>, _>>()?;
        let mut saved = Vec::new();
        let mut code = KSFT_PASS;
        for (i, kernel) in kernels.iter().enumerate() {
            let path = bench_path(config, i, kernels.len())?;
            let context = BenchContext { path: path.clone(), qemu: qemu.version.clone() };
            let (kernel_code, _) =
                run_kernel(&Session::new(config, work, &cache, &qemu, kernel), &config.viommus[0], Some(&context))?;
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
        return Ok(code);
    }
    if let [source] = config.kernels.as_slice() {
        let kernel = get(source)?;
        kernel.report_gaps();
        return match config.viommus.as_slice() {
            [viommu] => {
                run_kernel(&Session::new(config, work, &cache, &qemu, &kernel), viommu, None).map(|(code, _)| code)
            }
            viommus => matrix::run(&Session::new(config, work, &cache, &qemu, &kernel), viommus),
        };
    }
    // The suite on each kernel in turn, then what differs between them.
    let mut codes = Vec::new();
    let mut columns = Vec::new();
    for source in &config.kernels {
        let (code, cell, label) = match get(source) {
            Ok(kernel) => {
                eprintln!("[vm] ==== kernel {} ====", kernel.label);
                kernel.report_gaps();
                // Each kernel's TAP is a document of its own; this line says whose.
                println!("# kernel {}", kernel.label);
                match run_kernel(&Session::new(config, work, &cache, &qemu, &kernel), &config.viommus[0], None) {
                    Ok((code, results)) => (code, Cell { results, problem: None }, kernel.label),
                    Err(e) => (KSFT_FAIL, Cell { results: Vec::new(), problem: Some(e.message) }, kernel.label),
                }
            }
            Err(e) => {
                eprintln!("vfiotest: {}", e.message);
                (KSFT_FAIL, Cell { results: Vec::new(), problem: Some(e.message) }, source_label(source))
            }
        };
        codes.push(code);
        columns.push((label, cell));
    }
    let columns: Vec<Column> = columns.iter().map(|(name, cell)| Column { name, cell, note: "" }).collect();
    eprint!("{}", matrix::table("kernel", &columns));
    eprint!("{}", matrix::differences(&columns));
    Ok(matrix::combined(&codes))
}

/// A kernel's name in messages before it is built.
fn source_label(source: &kernel::Source) -> String {
    match source {
        kernel::Source::Image(path) => path.display().to_string(),
        kernel::Source::Debian(version) => version.name.to_owned(),
        kernel::Source::Tree(path) => format!("tree {}", path.display()),
        kernel::Source::Patched { base, .. } => format!("{} patched", base.name),
    }
}

/// `label` as a file name's part: letters, digits, dots and dashes.
fn slug(label: &str) -> String {
    let slug: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    slug.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-")
}

/// What every run of one `vfiotest vm` shares: the request, the cache, the emulator and the
/// kernel.
struct Session<'a> {
    config: &'a VmConfig,
    work: &'a Work,
    cache: &'a Cache,
    qemu: &'a qemu::Emulator,
    kernel: &'a Kernel,
    /// Where this run's verdicts go (behind several vIOMMUs, one file each beside them).
    reports: crate::reports::ReportArgs,
    /// When the run started, for its reports.
    started: String,
}

impl<'a> Session<'a> {
    fn new(
        config: &'a VmConfig,
        work: &'a Work,
        cache: &'a Cache,
        qemu: &'a qemu::Emulator,
        kernel: &'a Kernel,
    ) -> Self {
        // Several kernels' verdicts go to one file each, beside the one asked for.
        let reports = match config.kernels.len() {
            1 => config.reports.clone(),
            _ => config.reports.beside(&slug(&kernel.label)),
        };
        Self { config, work, cache, qemu, kernel, reports, started: crate::reports::now() }
    }
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
            kernel: &session.kernel.bzimage,
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
    goal: plan::Goal,
) -> Result<Prepared<'a>, Fatal> {
    let initrd = scratch.path.join(format!("initramfs-{}.cpio", viommu.name));
    let bdfs = session.config.bdfs.iter().map(|b| b.to_string()).collect();
    initramfs::build(
        me.to_vec(),
        &Payload { bdfs, command: session.work.command_for(viommu, session.kernel.known_bugs) },
        &initrd,
    )?;
    let plan = plan::machines(session.config, session.work, history, viommu.name, goal);
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
    let reports = match config.viommus.len() {
        1 => session.reports.clone(),
        _ => session.reports.beside(prepared.viommu.name),
    };
    let about = outcome::About {
        started: &session.started,
        qemu: &session.qemu.version,
        viommu: prepared.viommu.name,
        kernel: &session.kernel.label,
    };
    let code = finish(config, &reports, &about, accel, &runs, bench)?;
    // Only whole programs say what a program takes: a run with kselftest filters doesn't. Each
    // machine ran with its share's clock, as the accelerator allowed.
    if session.work.whole_programs {
        let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
        history.record(
            prepared.viommu.name,
            prepared.plan.iter().zip(&runs).flat_map(|(share, run)| {
                let clock = share.clock.under(accel);
                run.console
                    .results
                    .iter()
                    .filter(|r| r.test == console::PROGRAM_VERDICT)
                    .map(move |r| (r.program.clone(), clock, r.duration_s))
            }),
        );
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
        prepare(session, viommu, &this_binary()?, &scratch, &history, plan::Goal::SoonestEnd)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisect_codes_are_git_bisect_runs() {
        let code = |outcome: Result<i32, Fatal>| match bisect_outcome(outcome) {
            Ok(code) => code,
            Err(e) => e.code,
        };
        assert_eq!(code(Ok(KSFT_PASS)), 0, "good");
        assert_eq!(code(Ok(KSFT_FAIL)), 1, "bad");
        assert_eq!(code(Ok(KSFT_SKIP)), 125, "every test skipped: can't tell");
        assert_eq!(code(Ok(130)), 130, "a signal stops the bisection");
        assert_eq!(code(Err(Fatal { code: UNTESTABLE, message: "build".into() })), 125);
        assert_eq!(code(Err(Fatal::fail("the guest kernel failed: a panic"))), 1, "a panic in a test is bad");
        assert_eq!(code(Err(cant_run(Fatal::fail("no QEMU")))), 255, "the host's trouble stops it");
    }
}
