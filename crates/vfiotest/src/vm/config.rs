//! `vfiotest vm`'s command line, parsed once into what the stages need: nothing below
//! [`super::main`] sees [`VmArgs`]. The guest's arguments are parsed here too, with the parser
//! `vfiotest run` itself uses, so the host knows the programs and filters without guessing.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::kernel;
use super::machine::{self, Accel, TOPOLOGY, Viommu};
use crate::Fatal;
use crate::guest::protocol::GuestCommand;
use crate::reports::ReportArgs;
use crate::suite::{RunArgs, resolve_targets};

/// Options of `vfiotest vm`.
#[derive(Args, Debug)]
pub struct VmArgs {
    /// Guest kernel to boot, as a bzImage; by default Linux 7.3 is built from Debian's source
    /// (once, cached). Give several kernels (any mix of --kernel, --tree, --kernel-version and
    /// --patch) to run the same suite on each and see which verdicts differ, or with `-- bench`
    /// to compare their timings with the first's.
    #[arg(long, value_name = "BZIMAGE")]
    kernel: Vec<PathBuf>,
    /// Build and boot your own kernel tree, out of tree (the tree is never written to), with
    /// our configuration; a second run rebuilds only what changed.
    #[arg(long, value_name = "PATH")]
    tree: Vec<PathBuf>,
    /// Build Debian's source of this kernel version: 6.1, 6.12, 7.2, 7.3, or `all` (each in
    /// turn, ending with a table of every program's verdicts per kernel).
    #[arg(long = "kernel-version", value_name = "VERSION|all")]
    kernel_version: Vec<String>,
    /// Apply this patch (an mbox as `git format-patch` writes it, or a plain diff) to Debian's
    /// source of the chosen version (7.3 unless --kernel-version names one), build and boot it.
    /// Repeatable: the patches apply in order, to one kernel.
    #[arg(long, value_name = "FILE")]
    patch: Vec<PathBuf>,
    /// With --patch: also run the unpatched kernel, first, as the baseline.
    #[arg(long, requires = "patch")]
    baseline: bool,
    /// Merge this kernel config fragment over ours when building (repeatable), e.g. one with
    /// CONFIG_KASAN=y.
    #[arg(long = "config", value_name = "FRAGMENT")]
    config: Vec<PathBuf>,
    /// Exit the way `git bisect run` reads it: 0 good, 1 bad, 125 when the kernel doesn't build
    /// or boot, or every chosen test SKIPs, and 255 (stop bisecting) when the run itself can't
    /// go on (a bad argument, no QEMU).
    #[arg(long)]
    pub(super) bisect: bool,
    /// How many builds of trees and patches to keep in the cache; older ones are removed.
    #[arg(long, value_name = "N", default_value_t = kernel::KEEP_BUILDS)]
    keep_builds: usize,
    /// The QEMU binary; by default QEMU 10 from Debian's bookworm-backports (fetched once, cached).
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// How QEMU runs the guest; `auto` tries KVM with a short probe and falls back to TCG.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    accel: Accel,
    /// The emulated IOMMU every device sits behind, or `all`: the whole suite behind each in
    /// turn, ending with a table of every program's verdicts per vIOMMU.
    #[arg(long, value_name = "NAME|all", default_value = "intel", value_parser = viommus_named)]
    viommu: ViommuChoice,
    /// Only these guest devices (default: the whole topology; see --topology).
    #[arg(long = "device", value_name = "BDF")]
    devices: Vec<String>,
    /// Print the topology and exit.
    #[arg(long)]
    topology: bool,
    /// Install what is missing and build the guest kernel, then exit without booting.
    #[arg(long)]
    prepare: bool,
    /// Give up after this many seconds in all.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    timeout: u64,
    /// Call the guest hung after this many seconds without console output.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    silence: u64,
    /// Reports beside the TAP: `--results` (for `-- bench`: the bench's results), `--kcidb`,
    /// `--junit`; behind several vIOMMUs or kernels, one file each, named for it.
    #[command(flatten)]
    reports: ReportArgs,
    /// Show the whole guest console, not just the suite's output.
    #[arg(long)]
    verbose: bool,
    /// Add to the guest kernel's command line, e.g. `intremap=off` to boot without interrupt
    /// remapping, or a module parameter such as `vfio_iommu_type1.allow_unsafe_interrupts=1`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// Add one argument to QEMU's command line (repeatable), e.g. `--qemu-arg=-trace
    /// --qemu-arg='amdvi_*'` to trace an emulated device; its output lands in the console log.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
    /// Run the programs on up to N machines at once (each TCG machine keeps one host core
    /// busy); by default as many as the host has cores.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    jobs: Option<usize>,
    /// At the end, list the N tests that took longest.
    #[arg(long, value_name = "N")]
    slowest: Option<usize>,
    /// Arguments for `vfiotest run` in the guest: a program name and kselftest filters.
    #[arg(last = true, value_name = "RUN ARGS")]
    run_args: Vec<String>,
}

/// What `vfiotest vm` was asked to do.
#[derive(Debug)]
pub struct VmConfig {
    /// Print the topology, prepare, or boot.
    pub action: Action,
    /// The kernels to boot, in turn: ours alone unless the user named others.
    pub kernels: Vec<kernel::Source>,
    /// What kernels built here are configured with.
    pub kernel_config: kernel::Configuration,
    /// Exit codes for `git bisect run`.
    pub bisect: bool,
    /// Builds of trees and patches kept in the cache.
    pub keep_builds: usize,
    /// Another QEMU than ours.
    pub qemu: Option<PathBuf>,
    pub accel: Accel,
    /// The vIOMMUs to run behind, one after another (one, unless `--viommu all`).
    pub viommus: Vec<Viommu>,
    /// The guest devices the payload runs on.
    pub bdfs: Vec<&'static str>,
    /// What the guest kernel's command line gets besides ours.
    pub append: Option<String>,
    /// What QEMU's command line gets besides ours.
    pub qemu_args: Vec<String>,
    /// The whole run's limit, and how long the guest may stay silent.
    pub timeout: Duration,
    pub silence: Duration,
    /// Where the verdicts go, in each format asked for (`results`: the bench's results, for
    /// the bench).
    pub reports: ReportArgs,
    pub verbose: bool,
    pub slowest: Option<usize>,
    /// Machines at once, at most.
    pub jobs: usize,
}

/// What the run does.
#[derive(Debug)]
pub enum Action {
    /// Print the emulated machine's devices.
    Topology,
    /// Install and build what a boot needs, and stop.
    Prepare,
    /// Boot and run this in the guest.
    Boot(Work),
}

/// What the guest runs, decided on the host.
#[derive(Debug, Clone)]
pub struct Work {
    /// The payload's command (for a run, `--require` is added per vIOMMU: [`Work::command_for`]).
    pub command: GuestCommand,
    /// Whether the guest must have every feature its vIOMMU allows (our machine as built).
    pub require_ours: bool,
    /// The programs a run names (none: all of them); empty for the bench and the proof.
    pub programs: Vec<&'static str>,
    /// Whether the run takes whole programs (no kselftest filters): then what each took is
    /// worth keeping for planning.
    pub whole_programs: bool,
}

impl Work {
    /// The payload's command behind `viommu` on a kernel with `kernel_bugs`: a run expects its
    /// emulator's and its kernel's known bugs, and on our machine requires every feature but
    /// those `viommu` can't have.
    pub fn command_for(&self, viommu: &Viommu, kernel_bugs: &[(&str, &str)]) -> GuestCommand {
        let GuestCommand::Run { args } = &self.command else { return self.command.clone() };
        let mut args = args.clone();
        if self.require_ours {
            let wanted: Vec<&str> =
                vfio::Feature::ALL.iter().filter(|f| !viommu.lacks.contains(f)).map(|f| f.name()).collect();
            args.extend(["--require".to_owned(), wanted.join(",")]);
        }
        for (pattern, bug) in viommu.known_bugs.iter().chain(kernel_bugs) {
            args.extend(["--known-bug".to_owned(), format!("{pattern}={bug}")]);
        }
        GuestCommand::Run { args }
    }

    /// Whether the guest runs the bench: one machine, its clock real.
    pub fn is_bench(&self) -> bool {
        matches!(self.command, GuestCommand::Bench { .. })
    }

    /// Whether the guest runs the suite (not the bench or the setup proof).
    pub fn is_suite(&self) -> bool {
        matches!(self.command, GuestCommand::Run { .. })
    }

    /// What the run's TAP is named by: its program when it runs one alone.
    pub fn label(&self) -> &'static str {
        match self.programs[..] {
            [one] => one,
            _ => "vfiotest",
        }
    }
}

impl VmConfig {
    /// Checks and types `args`.
    ///
    /// # Errors
    /// A device the machine lacks, several kernels without the bench, guest arguments that
    /// `vfiotest run` would refuse: one line each.
    pub fn parse(args: &VmArgs) -> Result<Self, Fatal> {
        let action = match () {
            _ if args.topology => Action::Topology,
            _ if args.prepare => Action::Prepare,
            _ => Action::Boot(work(args)?),
        };
        let kernels = kernel_sources(args)?;
        if kernels.len() > 1 && args.viommu.0.len() > 1 {
            return Err(Fatal::fail("several kernels and --viommu all: run the matrix on one kernel at a time"));
        }
        if args.bisect && kernels.len() > 1 {
            return Err(Fatal::fail("--bisect tries one kernel: give one --tree (or --kernel)"));
        }
        if let Action::Boot(work) = &action
            && work.is_bench()
            && args.viommu.0.len() > 1
        {
            return Err(Fatal::fail("the bench runs behind one vIOMMU: leave out --viommu all"));
        }
        Ok(Self {
            action,
            kernels,
            kernel_config: kernel::Configuration::with_user_fragments(&args.config)?,
            bisect: args.bisect,
            keep_builds: args.keep_builds,
            qemu: args.qemu.clone(),
            accel: args.accel,
            viommus: args.viommu.0.clone(),
            bdfs: select_devices(&args.devices)?,
            append: args.append.clone(),
            qemu_args: args.qemu_args.clone(),
            timeout: Duration::from_secs(args.timeout),
            silence: Duration::from_secs(args.silence),
            reports: args.reports.clone(),
            verbose: args.verbose,
            slowest: args.slowest,
            jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        })
    }

    /// Whether the machine is ours as built: our kernel, its command line untouched.
    pub fn is_ours(&self) -> bool {
        matches!(self.kernels[..], [kernel::Source::Debian(v)] if v == kernel::debian::ours())
            && self.kernel_config.is_ours()
            && self.append.is_none()
    }
}

/// `--viommu`'s value: one vIOMMU, or all of them.
#[derive(Debug, Clone)]
pub struct ViommuChoice(Vec<Viommu>);

/// `--viommu NAME` or `--viommu all`.
fn viommus_named(name: &str) -> Result<ViommuChoice, String> {
    match name {
        "all" => Ok(ViommuChoice(machine::VIOMMUS.to_vec())),
        name => Viommu::named(name).map(|v| ViommuChoice(vec![v])),
    }
}

/// The guest's work from `-- RUN ARGS`: the bench, the setup proof, or `vfiotest run` with the
/// user's arguments and `--require all` when the machine is ours as built: it has every
/// feature, so a kernel config change that drops one fails the suite instead of skipping
/// tests. A user's own kernel or command line may lack features on purpose; the user can pass
/// `--require`.
fn work(args: &VmArgs) -> Result<Work, Fatal> {
    let plain = |command| Work { command, require_ours: false, programs: Vec::new(), whole_programs: false };
    match args.run_args.first().map(String::as_str) {
        Some("bench") => return Ok(plain(GuestCommand::Bench { args: args.run_args[1..].to_vec() })),
        Some("setup-proof") => return Ok(plain(GuestCommand::SetupProof)),
        _ => {}
    }
    let run = RunArgs::parse_from(&args.run_args)?;
    let (programs, bdfs) = resolve_targets(&run.targets)?;
    if !bdfs.is_empty() {
        return Err(Fatal::fail("name the guest's devices with --device, not after `--`"));
    }
    let ours = names_no_kernel(args) && args.config.is_empty() && args.append.is_none();
    let require_ours = ours && run.require.is_none();
    let whole_programs = run.filters.0.is_empty();
    Ok(Work { command: GuestCommand::Run { args: args.run_args.clone() }, require_ours, programs, whole_programs })
}

/// Whether the user named no kernel: ours runs.
fn names_no_kernel(args: &VmArgs) -> bool {
    args.kernel.is_empty() && args.tree.is_empty() && args.kernel_version.is_empty() && args.patch.is_empty()
}

/// The kernels the user named, in this order: bzImages, trees, Debian versions, then the
/// patched one (after its baseline, with --baseline); ours if none.
fn kernel_sources(args: &VmArgs) -> Result<Vec<kernel::Source>, Fatal> {
    use kernel::{Source, debian};
    let mut versions = Vec::new();
    for name in &args.kernel_version {
        match name.as_str() {
            "all" => versions.extend(debian::VERSIONS.iter()),
            name => versions.push(debian::named(name)?),
        }
    }
    let mut sources: Vec<Source> = args.kernel.iter().cloned().map(Source::Image).collect();
    for tree in &args.tree {
        sources.push(Source::Tree(kernel::check_tree(tree)?));
    }
    if args.patch.is_empty() {
        sources.extend(versions.into_iter().map(Source::Debian));
    } else {
        let base = match versions[..] {
            [] => debian::ours(),
            [one] => one,
            _ => return Err(Fatal::fail("--patch applies to one Debian version: give at most one --kernel-version")),
        };
        let patches = args.patch.iter().map(|p| kernel::Patch::read(p)).collect::<Result<Vec<_>, _>>()?;
        if args.baseline {
            sources.push(Source::Debian(base));
        }
        sources.push(Source::Patched { base, patches });
    }
    if sources.is_empty() {
        sources.push(Source::Debian(debian::ours()));
    }
    Ok(sources)
}

fn select_devices(wanted: &[String]) -> Result<Vec<&'static str>, Fatal> {
    if wanted.is_empty() {
        return Ok(TOPOLOGY.iter().map(|d| d.bdf).collect());
    }
    wanted
        .iter()
        .map(|w| {
            TOPOLOGY.iter().find(|d| d.bdf == w).map(|d| d.bdf).ok_or_else(|| {
                let all: Vec<_> = TOPOLOGY.iter().map(|d| d.bdf).collect();
                Fatal::fail(format!("{w} is not in the emulated machine; it has {}", all.join(", ")))
            })
        })
        .collect()
}

/// A count that must be 1 or more.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        vm: VmArgs,
    }

    fn parse(args: &[&str]) -> Result<VmConfig, Fatal> {
        VmConfig::parse(&Cli::try_parse_from(std::iter::once("vm").chain(args.iter().copied())).unwrap().vm)
    }

    fn work(args: &[&str]) -> Work {
        match parse(args).unwrap().action {
            Action::Boot(work) => work,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_guests_arguments_are_parsed_as_vfiotest_run_parses_them() {
        let w = work(&["--", "vfio_dma_buf_test", "vfio_p2p_dma_test", "-t", "to_bar"]);
        assert_eq!(w.programs, ["vfio_dma_buf_test", "vfio_p2p_dma_test"]);
        assert!(!w.whole_programs, "a filter: not a whole program's time");
        assert_eq!(w.label(), "vfiotest");
        let GuestCommand::Run { args } = w.command_for(&machine::INTEL, &[]) else { panic!() };
        let every = vfio::Feature::ALL.map(|f| f.name()).join(",");
        assert_eq!(args[args.len() - 2..], ["--require".to_owned(), every], "our machine requires every feature");
        let GuestCommand::Run { args } = w.command_for(&machine::VIRTIO, &[]) else { panic!() };
        let required = args.last().unwrap();
        assert!(!required.contains("irq-remap") && !required.contains("iommu-pgtables"), "{required}");
        assert!(required.contains("iommufd"), "what virtio-iommu allows stays required: {required}");
        let w = work(&["--", "vfio_dma_mapping_mmio_test"]);
        assert!(w.whole_programs && w.label() == "vfio_dma_mapping_mmio_test");
        let w = work(&["--kernel", "/bz", "--", "vfio_dma_mapping_mmio_test"]);
        let GuestCommand::Run { args } = w.command_for(&machine::INTEL, &[]) else { panic!() };
        assert!(!args.contains(&"--require".to_owned()), "a user's kernel may lack features");
        let GuestCommand::Run { args } = w.command_for(&machine::AMD, &[("p/t.*", "a kernel's bug")]) else { panic!() };
        assert!(args.ends_with(&["--known-bug".to_owned(), "p/t.*=a kernel's bug".to_owned()]), "{args:?}");
        assert!(args.iter().filter(|a| *a == "--known-bug").count() > 1, "the emulator's bugs too: {args:?}");
        assert!(work(&["--", "bench", "--memory", "bar"]).is_bench());
        assert_eq!(work(&["--", "setup-proof"]).command, GuestCommand::SetupProof);
    }

    #[test]
    fn kernels_come_in_a_fixed_order_and_ours_by_default() {
        use kernel::Source;
        let patch = std::env::temp_dir().join(format!("vfiotest-config-{}.patch", std::process::id()));
        std::fs::write(&patch, "--- a/x\n+++ b/x\n").unwrap();
        let kinds = |args: &[&str]| -> Vec<String> {
            let config = parse(args).unwrap();
            config
                .kernels
                .iter()
                .map(|s| match s {
                    Source::Image(p) => format!("image {}", p.display()),
                    Source::Debian(v) => format!("debian {}", v.name),
                    Source::Tree(p) => format!("tree {}", p.display()),
                    Source::Patched { base, patches } => format!("{}+{}", base.name, patches.len()),
                })
                .collect()
        };
        assert_eq!(kinds(&[]), ["debian 7.3"]);
        assert!(parse(&[]).unwrap().is_ours());
        assert!(!parse(&["--kernel-version", "6.12"]).unwrap().is_ours());
        let p = patch.to_str().unwrap();
        assert_eq!(kinds(&["--patch", p, "--kernel", "/bz", "--patch", p]), ["image /bz", "7.3+2"]);
        assert_eq!(kinds(&["--patch", p, "--baseline", "--kernel-version", "6.12"]), ["debian 6.12", "6.12+1"]);
        assert_eq!(kinds(&["--kernel-version", "all"]), ["debian 6.1", "debian 6.12", "debian 7.2", "debian 7.3"]);
        let e = parse(&["--patch", p, "--kernel-version", "6.1", "--kernel-version", "7.3"]).unwrap_err();
        assert!(e.message.contains("at most one --kernel-version"), "{}", e.message);
        std::fs::remove_file(&patch).unwrap();
    }

    #[test]
    fn bad_guest_arguments_fail_on_the_host() {
        let e = parse(&["--", "nonsense"]).unwrap_err();
        assert!(e.message.contains("neither a test program"), "{}", e.message);
        let e = parse(&["--", "0000:00:03.0"]).unwrap_err();
        assert!(e.message.contains("--device"), "{}", e.message);
        let e = parse(&["--", "--no-such-option"]).unwrap_err();
        assert!(!e.message.contains('\n'), "{}", e.message);
        let e = parse(&["--device", "0000:00:1f.0"]).unwrap_err();
        assert!(e.message.contains("not in the emulated machine"), "{}", e.message);
        let e = parse(&["--kernel", "a", "--kernel", "b", "--viommu", "all"]).unwrap_err();
        assert!(e.message.contains("one kernel at a time"), "{}", e.message);
        let e = parse(&["--kernel-version", "5.10"]).unwrap_err();
        assert!(e.message.contains("offered for 6.1, 6.12, 7.2, 7.3, or all"), "{}", e.message);
        let e = parse(&["--kernel", "a", "--kernel", "b", "--bisect"]).unwrap_err();
        assert!(e.message.contains("--bisect tries one kernel"), "{}", e.message);
        let e = parse(&["--tree", "/nonexistent"]).unwrap_err();
        assert_eq!(e.message, "--tree /nonexistent: No such file or directory (os error 2)");
        let e = parse(&["--tree", "/etc"]).unwrap_err();
        assert!(e.message.contains("not a Linux kernel tree"), "{}", e.message);
        let e = parse(&["--patch", "/nonexistent.patch"]).unwrap_err();
        assert!(e.message.starts_with("--patch /nonexistent.patch: "), "{}", e.message);
        assert!(matches!(parse(&["--topology"]).unwrap().action, Action::Topology));
    }
}
