//! `vfiotest`: VFIO and iommufd selftests, and an emulated machine to run them in.

#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ksft::{Filter, Filters, KSFT_PASS, KSFT_SKIP};
use vfio::Bdf;
use vfio::sysfs::Sysfs;
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
    Run(RunArgs),
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

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Program names to run (else all of them), then the devices to run on (else
    /// $VFIO_SELFTESTS_BDF).
    #[arg(value_name = "PROGRAM|BDF")]
    targets: Vec<String>,
    /// Include tests named NAME.
    #[arg(short = 't', value_name = "NAME", action = ArgAction::Append)]
    test: Vec<String>,
    /// Exclude tests named NAME.
    #[arg(short = 'T', value_name = "NAME", action = ArgAction::Append)]
    no_test: Vec<String>,
    /// Include fixture NAME.
    #[arg(short = 'f', value_name = "NAME", action = ArgAction::Append)]
    fixture: Vec<String>,
    /// Exclude fixture NAME.
    #[arg(short = 'F', value_name = "NAME", action = ArgAction::Append)]
    no_fixture: Vec<String>,
    /// Include variant NAME.
    #[arg(short = 'v', value_name = "NAME", action = ArgAction::Append)]
    variant: Vec<String>,
    /// Exclude variant NAME.
    #[arg(short = 'V', value_name = "NAME", action = ArgAction::Append)]
    no_variant: Vec<String>,
    /// Run only fixture.variant.test.
    #[arg(short = 'r', value_name = "NAME", action = ArgAction::Append)]
    run: Vec<String>,
    /// List every test (upstream's table, on stderr) and exit 4, as kselftest_harness does.
    #[arg(short = 'l')]
    list: bool,
    /// Enable debug prints. Accepted for kselftest_harness compatibility: none of the ported
    /// tests prints debug messages, upstream's included.
    #[arg(short = 'd')]
    debug: bool,
    /// Features this kernel must have, comma-separated, or `all`: a test that would SKIP for
    /// want of one FAILs instead, naming it. Features: iommufd, container, cdev, dma-buf,
    /// hugetlb-2m, hugetlb-1g, iommu-pgtables, sr-iov, irq-remap (see the README).
    #[arg(long, value_name = "FEATURES", env = "VFIOTEST_REQUIRE")]
    require: Option<String>,
    /// Make the DMA drivers fake a fault (`driver-wedge`: every copy wedges the engine and its
    /// recovery fails), to show that the tests fail when a driver does.
    #[arg(long, value_name = "FAULT", hide = true)]
    inject_fault: Option<String>,
    /// Only these programs of the run, by their index in it (the vm runner's share of the
    /// programs for one of several machines).
    #[arg(long, value_delimiter = ',', hide = true)]
    units: Vec<usize>,
    /// The filters in command-line order (first match wins), rebuilt from the options above.
    #[arg(skip)]
    filters: Filters,
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
            eprintln!("vfiotest: {}", fatal.message);
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
            // clap's error is several lines; keep the first, which says what is wrong.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            return Err(Fatal::fail(format!("{first} (see vfiotest --help)")));
        }
    };
    let filters = match matches.subcommand() {
        Some(("run", sub)) => filters_in_order(sub),
        _ => Filters::default(),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Fatal::fail(e.to_string()))?;
    Ok((cli, filters))
}

/// kselftest filters are decided by the first match, so their command-line order matters.
fn filters_in_order(m: &clap::ArgMatches) -> Filters {
    type MakeFilter = fn(String) -> Filter;
    let kinds: [(&str, MakeFilter); 7] = [
        ("test", |n| Filter::Test(true, n)),
        ("no_test", |n| Filter::Test(false, n)),
        ("fixture", |n| Filter::Fixture(true, n)),
        ("no_fixture", |n| Filter::Fixture(false, n)),
        ("variant", |n| Filter::Variant(true, n)),
        ("no_variant", |n| Filter::Variant(false, n)),
        ("run", Filter::Run),
    ];
    let mut indexed = Vec::new();
    for (id, make) in kinds {
        if let (Some(values), Some(indices)) = (m.get_many::<String>(id), m.indices_of(id)) {
            indexed.extend(indices.zip(values.cloned().map(make)));
        }
    }
    indexed.sort_by_key(|(i, _)| *i);
    Filters(indexed.into_iter().map(|(_, f)| f).collect())
}

fn dispatch((cli, filters): (Cli, Filters)) -> Result<i32, Fatal> {
    match cli.command {
        Command::Run(mut args) => {
            args.filters = filters;
            run(&args)
        }
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

/// Splits `run`'s positional arguments into the program names they start with (none: all
/// programs) and the devices.
fn resolve_targets(targets: &[String]) -> Result<(Vec<&'static str>, Vec<Bdf>), Fatal> {
    let program_named = |t: &String| programs::PROGRAMS.iter().find(|p| p.name == t).map(|p| p.name);
    let names: Vec<&'static str> = targets.iter().map_while(program_named).collect();
    let rest = &targets[names.len()..];
    let mut bdfs = rest
        .iter()
        .map(|t| {
            t.parse::<Bdf>().map_err(|e| match t.contains(':') {
                true => Fatal::fail(e.to_string()),
                false => Fatal::fail(format!("{t:?} is neither a test program (see `vfiotest list`) nor a BDF")),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if bdfs.is_empty()
        && let Ok(env) = std::env::var("VFIO_SELFTESTS_BDF")
    {
        bdfs = env.split_whitespace().map(|s| s.parse::<Bdf>()).collect::<Result<_, _>>()?;
    }
    Ok((names, bdfs))
}

fn run(args: &RunArgs) -> Result<i32, Fatal> {
    // Before anything runs, in the harness and in each test's child alike (same arguments).
    if let Some(list) = &args.require {
        vfio::feature::require(vfio::Feature::parse_list(list)?);
    }
    if let Some(fault) = &args.inject_fault {
        vfio::driver::inject(fault.parse()?);
    }
    let (names, bdfs) = resolve_targets(&args.targets)?;
    if bdfs.is_empty() {
        return Err(Fatal::skip("no device to test: pass BDFs (vfiotest run 0000:00:03.0) or set VFIO_SELFTESTS_BDF"));
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
    Ok(ksft::run_programs(&catalogue, &args.filters, &mut std::io::stdout(), &mut std::io::stderr()))
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

    #[test]
    fn filters_keep_command_line_order() {
        let m = Cli::command().get_matches_from(["vfiotest", "run", "-T", "foo", "-v", "bla", "-t", "x"]);
        let (_, sub) = m.subcommand().unwrap();
        assert_eq!(
            filters_in_order(sub).0,
            [Filter::Test(false, "foo".into()), Filter::Variant(true, "bla".into()), Filter::Test(true, "x".into())]
        );
    }

    #[test]
    fn targets_split_into_programs_and_devices() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (p, b) = resolve_targets(&args(&["vfio_dma_mapping_mmio_test", "0000:00:03.0"])).unwrap();
        assert_eq!(p, ["vfio_dma_mapping_mmio_test"]);
        assert_eq!(b.len(), 1);
        let two = ["vfio_p2p_dma_test", "vfio_dma_buf_test", "0000:00:03.0", "0000:00:05.0"];
        let (p, b) = resolve_targets(&args(&two)).unwrap();
        assert_eq!((p, b.len()), (vec!["vfio_p2p_dma_test", "vfio_dma_buf_test"], 2));
        let (p, b) = resolve_targets(&args(&["0000:00:03.0"])).unwrap();
        assert!(p.is_empty() && b.len() == 1, "no program named: all of them");
        let err = resolve_targets(&args(&["0000:00:03.0", "vfio_dma_buf_test"])).unwrap_err();
        assert!(err.message.contains("neither a test program"), "programs come first: {}", err.message);
        let err = resolve_targets(&args(&["nonsense"])).unwrap_err();
        assert_eq!(err.message, "\"nonsense\" is neither a test program (see `vfiotest list`) nor a BDF");
        assert_eq!(err.code, ksft::KSFT_FAIL);
        let err = resolve_targets(&args(&["0000:00:zz.0"])).unwrap_err();
        assert!(err.message.starts_with("invalid BDF"), "{}", err.message);
    }
}
