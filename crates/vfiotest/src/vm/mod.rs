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
use std::path::Path;
use std::sync::Mutex;
use std::thread;

use ksft::KSFT_PASS;

use crate::Fatal;
use crate::cache::Cache;
use crate::guest::protocol::Payload;
use bench_run::{BenchContext, bench_path};
use boot::{Launch, Machine, WorkDir, probe_kvm};
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
    if !work.is_bench() {
        let run = |viommu: &machine::Viommu| run_kernel(&config, work, viommu, &cache, &qemu, &kernels[0], None);
        return match config.viommus.as_slice() {
            [viommu] => run(viommu).map(|(code, _)| code),
            viommus => Ok(matrix::run(viommus, run)),
        };
    }
    // Each kernel's bench in turn, each kept; then each compared with the first.
    let mut saved = Vec::new();
    let mut code = KSFT_PASS;
    for (i, kernel) in kernels.iter().enumerate() {
        let path = bench_path(&config, i, kernels.len())?;
        let context = BenchContext { path: path.clone(), qemu: qemu.version.clone() };
        let (kernel_code, _) = run_kernel(&config, work, &config.viommus[0], &cache, &qemu, kernel, Some(&context))?;
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

/// Boots `kernel` and runs the suite (or the bench) on it.
fn run_kernel(
    config: &VmConfig,
    work: &Work,
    viommu: &machine::Viommu,
    cache: &Cache,
    qemu: &qemu::Emulator,
    kernel: &Path,
    bench: Option<&BenchContext>,
) -> Result<(i32, Vec<console::TestResult>), Fatal> {
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
    initramfs::build(me_bytes, &Payload { bdfs, command: work.command_for(viommu) }, &initrd)?;

    let launch = Launch { qemu, viommu, kernel, initrd: &initrd };
    let accel = match config.accel {
        Accel::Auto => probe_kvm(&launch),
        accel => accel,
    };
    let program = work.label();
    let mut history = plan::History::load(cache);
    let plan = plan::machines(config, work, &history);
    let runs = match plan.as_slice() {
        [only] => vec![boot::boot(config, &launch, accel, cache, program, only.clock.under(accel), None)?],
        shares => {
            eprintln!("[vm] {} machines at once, programs split by their last durations", shares.len());
            let programs = shares.iter().map(|s| s.units.len()).sum();
            let merger = Mutex::new(ksft::Merger::new(
                crate::programs::COLLECTION,
                shares.len(),
                programs,
                &mut std::io::stdout(),
            ));
            let runs = thread::scope(|scope| {
                let machines: Vec<_> = shares
                    .iter()
                    .enumerate()
                    .map(|(machine, share)| {
                        let (launch, merger) = (&launch, &merger);
                        scope.spawn(move || {
                            let machine = Machine { index: machine, units: &share.units, merger };
                            boot::boot(config, launch, accel, cache, program, share.clock.under(accel), Some(machine))
                        })
                    })
                    .collect();
                machines.into_iter().map(|m| m.join().expect("a machine's thread panicked")).collect::<Vec<_>>()
            });
            merger.lock().unwrap_or_else(|p| p.into_inner()).flush(&mut std::io::stdout());
            runs.into_iter().collect::<Result<Vec<_>, _>>()?
        }
    };
    // Behind several vIOMMUs, each one's verdicts go to a file of its own.
    let results = match config.viommus.len() {
        1 => config.results.clone(),
        _ => config.results.as_ref().map(|p| p.with_extension(format!("{}.json", viommu.name))),
    };
    let code = finish(config, results.as_deref(), accel, &runs, bench)?;
    // Only whole programs say what a program takes: a run with kselftest filters doesn't. Each
    // machine ran with its share's clock, as the accelerator allowed.
    if work.whole_programs {
        history.record(plan.iter().zip(&runs).flat_map(|(share, run)| {
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
