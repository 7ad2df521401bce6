//! `vfiotest`: VFIO and iommufd selftests, and an emulated machine to run them in.

#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ksft::{Filters, KSFT_PASS, KSFT_SKIP};
use vfio::Bdf;
use vfio::sysfs::Sysfs;
use vfiotest::reports::{Recorder, ReportArgs};
use vfiotest::suite::{RunArgs, filters_in_order, resolve_targets};
use vfiotest::{Fatal, bench, programs, setup, vm};

#[derive(Parser)]
#[command(version, about = "VFIO and iommufd DMA-mapping selftests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the test programs on devices bound to vfio-pci (kselftest TAP on stdout).
    Run {
        #[command(flatten)]
        args: RunArgs,
        #[command(flatten)]
        reports: ReportArgs,
    },
    /// Turn a results document (`--results FILE`) into another report: KCIDB, JUnit XML, or
    /// LAVA's test signals on stdout; or print the document's JSON schema.
    Report(ReportCommand),
    /// List programs and their tests.
    List(ListArgs),
    /// Boot the emulated machine (QEMU + a Linux 7.3 guest) and run the suite inside it.
    Vm(vm::VmArgs),
    /// Measure DMA map and unmap cost over memory kind × size × alignment × mode on a device
    /// bound to vfio-pci (in the emulated machine: `vfiotest vm -- bench BDF ...`).
    Bench(bench::BenchArgs),
    /// Read a bench run back: misaligned/aligned ratios, a comparison with another run (a
    /// kernel before a patch), and SVG plots.
    BenchReport(bench::ReportArgs),
    /// Bind devices to vfio-pci (through driver_override), recording what they had; refuses a
    /// device the host uses (mounted, swap, a configured network interface, the boot VGA).
    Setup {
        /// Devices, e.g. 0000:00:03.0.
        #[arg(required = true)]
        bdfs: Vec<String>,
        /// Take a device even if the host uses it.
        #[arg(long)]
        force: bool,
    },
    /// Give devices back what `setup` recorded (all recorded devices if none is named).
    Cleanup {
        /// Devices, e.g. 0000:00:03.0.
        bdfs: Vec<String>,
    },
    /// The emulated machine's /init (it runs as that when the kernel starts it).
    #[command(hide = true)]
    GuestInit,
    /// The emulated machine's proof that setup can't take a disk in use (`vfiotest vm --device
    /// BDF -- setup-proof`).
    #[command(hide = true)]
    SetupProof {
        /// The nvme whose disk is tried.
        bdf: String,
    },
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("input").args(["results_file", "schema"]).required(true))]
struct ReportCommand {
    /// A results document, as `vfiotest run --results` or `vfiotest vm --results` wrote it.
    #[arg(value_name = "RESULTS")]
    results_file: Option<std::path::PathBuf>,
    /// Print the results document's JSON schema and exit.
    #[arg(long, conflicts_with_all = ["lava", "kcidb", "junit", "results"])]
    schema: bool,
    /// Print LAVA's test signals for every verdict (what `lava-test-case` would print).
    #[arg(long)]
    lava: bool,
    #[command(flatten)]
    reports: ReportArgs,
}

#[derive(Args)]
struct ListArgs {
    /// Only this program.
    program: Option<String>,
}

fn main() -> ExitCode {
    // A panic is a bug in vfiotest; say so in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("vfiotest: internal error: {info}")));
    // The kernel starts the emulated machine's init as PID 1, with no arguments. (Not by its
    // name: the harness re-runs this binary, /init there, for each test.)
    if rustix::process::getpid().is_init() {
        vfiotest::guest::init::main();
    }
    let code = match parse().and_then(dispatch) {
        Ok(code) => code,
        Err(fatal) => {
            eprintln!("vfiotest: {}", fatal.line());
            fatal.code
        }
    };
    ExitCode::from(code as u8)
}

fn parse() -> Result<(Cli, Filters), Fatal> {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        // kselftest_harness prints its usage on stderr and exits 4 (skip) for -h; `run` is the
        // kselftest-compatible command, so its help does the same.
        Err(e)
            if e.kind() == clap::error::ErrorKind::DisplayHelp && std::env::args().nth(1).as_deref() == Some("run") =>
        {
            eprint!("{}", e.render());
            std::process::exit(KSFT_SKIP);
        }
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            let message = format!("{} (see vfiotest --help)", vfiotest::clap_error_line(&e));
            // Under `vm --bisect`, a bad argument must stop `git bisect run`, not mark a commit bad.
            let args: Vec<String> = std::env::args().collect();
            let bisecting = args.get(1).is_some_and(|c| c == "vm") && args.iter().any(|a| a == "--bisect");
            let code = if bisecting { vm::BISECT_STOP } else { ksft::KSFT_FAIL };
            return Err(Fatal { code, message });
        }
    };
    let filters = match matches.subcommand() {
        Some(("run", sub)) => filters_in_order(sub),
        _ => Filters::default(),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Fatal::fail(e.to_string()))?;
    Ok((cli, filters))
}

fn dispatch((cli, filters): (Cli, Filters)) -> Result<i32, Fatal> {
    match cli.command {
        Command::Run { mut args, reports } => {
            args.filters = filters;
            run(&args, &reports)
        }
        Command::Report(command) => report(&command),
        Command::List(args) => list(args.program.as_deref()),
        Command::Vm(args) => vm::main(&args),
        Command::Bench(args) => bench::main(&args),
        Command::BenchReport(args) => bench::report_main(&args),
        Command::Setup { bdfs, force } => setup::setup(&parse_bdfs(&bdfs)?, force),
        Command::Cleanup { bdfs } => setup::cleanup(&parse_bdfs(&bdfs)?),
        Command::GuestInit => vfiotest::guest::init::main(),
        Command::SetupProof { bdf } => Ok(vfiotest::guest::setup_proof::main(bdf.parse()?)),
    }
}

fn run(args: &RunArgs, reports: &ReportArgs) -> Result<i32, Fatal> {
    let started = vfiotest::reports::now();
    // Before anything runs, in the harness and in each test's child alike (same arguments).
    if let Some(list) = &args.require {
        vfio::feature::require(vfio::Feature::parse_list(list)?);
    }
    if let Some(fault) = &args.inject_fault {
        vfio::driver::inject(fault.parse()?);
    }
    let (names, bdfs) = resolve_targets(&args.targets)?;
    if bdfs.is_empty() {
        return Err(Fatal::exit_skip(
            "no device to test: pass BDFs (vfiotest run 0000:00:03.0) or set VFIO_SELFTESTS_BDF",
        ));
    }
    let mut catalogue = programs::catalogue(&names, &bdfs);
    if !args.units.is_empty() {
        let all = std::mem::take(&mut catalogue);
        for &unit in &args.units {
            let program = all
                .get(unit)
                .ok_or_else(|| Fatal::fail(format!("--units {unit}: this run has {} programs", all.len())))?;
            catalogue.push(program.clone());
        }
    }
    for bug in &args.known_bugs {
        bug.mark(&mut catalogue);
    }
    // A harness child runs one test and answers with its exit code.
    if let Some(code) = ksft::run_child(&catalogue) {
        return Ok(code);
    }
    if args.list {
        let mut err = std::io::stderr().lock();
        for program in &catalogue {
            if catalogue.len() > 1 {
                let _ = writeln!(err, "{}:", program.name);
            }
            ksft::list_tests(program, &mut err);
        }
        return Ok(KSFT_SKIP);
    }
    let sysfs = Sysfs::system();
    for &bdf in &bdfs {
        sysfs.ensure_vfio_bound(bdf)?;
    }
    if !reports.any() {
        return Ok(ksft::run_programs(
            programs::COLLECTION,
            &catalogue,
            &args.filters,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ));
    }
    // Read before the tests: a device's driver and BARs as the run found them.
    let inventory = vfiotest::reports::inventory(&bdfs);
    let recorder = Recorder::new(catalogue.first().map_or("", |p| p.name.as_str()));
    let code = ksft::run_programs(
        programs::COLLECTION,
        &catalogue,
        &args.filters,
        &mut recorder.tee(0, std::io::stdout()),
        &mut recorder.tee(1, std::io::stderr()),
    );
    reports.write(&vfiotest::reports::document(started, inventory, &recorder.into_results()))?;
    Ok(code)
}

fn report(command: &ReportCommand) -> Result<i32, Fatal> {
    if command.schema {
        print!("{}", vfiotest_report::results::schema());
        return Ok(KSFT_PASS);
    }
    let path = command.results_file.as_ref().expect("clap requires RESULTS without --schema");
    let text = std::fs::read_to_string(path).map_err(|e| Fatal::fail(format!("{}: {e}", path.display())))?;
    let results =
        vfiotest_report::Results::from_json(&text).map_err(|e| Fatal::fail(format!("{}: {e}", path.display())))?;
    if !command.lava && !command.reports.any() {
        return Err(Fatal::fail("say what to write: --lava, --kcidb FILE, --junit FILE or --results FILE"));
    }
    command.reports.write(&results)?;
    if command.lava {
        print!("{}", vfiotest_report::lava::signals(&results));
    }
    Ok(KSFT_PASS)
}

fn print_tests(catalogue: &[ksft::Program]) -> Result<i32, Fatal> {
    let mut out = std::io::stdout().lock();
    for program in catalogue {
        for test in &program.tests {
            let _ = writeln!(out, "{} {}", program.name, test.full_name());
        }
    }
    Ok(KSFT_PASS)
}

fn list(only: Option<&str>) -> Result<i32, Fatal> {
    if let Some(name) = only
        && !programs::PROGRAMS.iter().any(|p| p.name == name)
    {
        return Err(Fatal::fail(format!("no test program named {name:?}")));
    }
    // Names don't depend on the device; any address will do for listing.
    let any = Bdf { segment: 0, bus: 0, device: 0, function: 0 };
    print_tests(&programs::catalogue(only.as_slice(), &[any]))
}

fn parse_bdfs(bdfs: &[String]) -> Result<Vec<Bdf>, Fatal> {
    bdfs.iter().map(|b| b.parse::<Bdf>().map_err(Fatal::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
