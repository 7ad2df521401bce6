//! `vfiotest bench`: what DMA map and unmap cost, over memory kind × size × alignment × mode.
//!
//! A kernel developer changing type1, iommufd or the huge pfnmap code needs one number before
//! and after the patch. Each cell maps and unmaps the same range several times and keeps every
//! sample, with what the kernel did where it shows: the IOMMU page size (Intel IOMMU debugfs)
//! and the memory it pinned.

pub mod matrix;
pub mod report;
pub mod run;
pub mod stats;

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use vfio::{Bdf, Device, Iommu, IommuMode};

use crate::Fatal;
use matrix::{Alignment, Limits, Memory, Spec, human};
use run::{Measured, Options};
use stats::seconds;

/// Marks the one line of the run's JSON on stdout, for whoever runs the bench remotely (the
/// vm runner, in the emulated machine).
pub const JSON_MARKER: &str = "vfiotest-bench-json: ";

/// `vfiotest bench`'s arguments.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// The device whose largest mmappable BAR is benchmarked, and through which every mode's
    /// IOMMU context is set up (bound to vfio-pci); else the first of $VFIO_SELFTESTS_BDF.
    pub bdf: Option<String>,
    /// Memory kinds: bar, anonymous, hugetlb-2m, hugetlb-1g (default: all).
    #[arg(long = "memory", value_delimiter = ',')]
    pub memory: Vec<Memory>,
    /// Alignments: aligned, page-off, 2m-off (default: all).
    #[arg(long = "align", value_delimiter = ',')]
    pub alignments: Vec<Alignment>,
    /// IOMMU modes (default: all five).
    #[arg(long = "mode", value_delimiter = ',')]
    pub modes: Vec<IommuMode>,
    /// The smallest size, in bytes (a power of two).
    #[arg(long, default_value_t = 4096)]
    pub min_size: u64,
    /// The largest size, in bytes.
    #[arg(long, default_value_t = 1 << 40)]
    pub max_size: u64,
    /// Anonymous memory to map at most, in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_anonymous: u64,
    /// Samples per cell.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Seconds a cell may take (all its samples): a cell predicted to take longer is skipped
    /// with the prediction, and so are the larger cells of its series.
    #[arg(long, default_value_t = 30.0)]
    pub budget: f64,
    /// Also write the JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// The whole run, as JSON.
#[derive(Serialize)]
struct Report<'a> {
    command: Vec<String>,
    kernel: String,
    cpus: usize,
    bdf: String,
    bar: Option<BarInfo>,
    samples: usize,
    budget_s: f64,
    cells: &'a [Measured],
}

#[derive(Serialize)]
struct BarInfo {
    index: u32,
    size: u64,
}

/// Free hugetlb pages of `size_kib` × their size.
fn hugetlb_bytes(size_kib: u64) -> u64 {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-{size_kib}kB/free_hugepages");
    let free: u64 = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    free * size_kib * 1024
}

/// The largest mmappable BAR of `bdf`, opened once in the first mode that works.
fn largest_bar(bdf: Bdf, modes: &[IommuMode]) -> Result<Option<(u32, u64)>, Fatal> {
    let mut last = None;
    for &mode in modes {
        match Iommu::open(mode).and_then(|iommu| Device::open(bdf, &iommu)) {
            Ok(device) => {
                let bar = device.bars().filter(|r| r.mmappable()).max_by_key(|r| r.size);
                return Ok(bar.map(|r| (r.index, r.size)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Fatal::exit_skip(format!(
        "{bdf} opens in none of the modes: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )))
}

/// `chosen`, or `all` when nothing was chosen.
fn or_all<T: Clone>(chosen: &[T], all: &[T]) -> Vec<T> {
    match chosen.is_empty() {
        true => all.to_vec(),
        false => chosen.to_vec(),
    }
}

/// Runs the bench; prints progress on stderr, then the table and the JSON line on stdout.
pub fn main(args: &BenchArgs) -> Result<i32, Fatal> {
    let bdf: Bdf = match &args.bdf {
        Some(bdf) => bdf.parse()?,
        None => std::env::var("VFIO_SELFTESTS_BDF")
            .ok()
            .and_then(|list| list.split_whitespace().next().map(str::to_owned))
            .ok_or_else(|| Fatal::exit_skip("no device to measure on: pass a BDF or set VFIO_SELFTESTS_BDF"))?
            .parse()?,
    };
    if !args.min_size.is_power_of_two() || args.samples == 0 || args.budget <= 0.0 {
        return Err(Fatal::fail("--min-size must be a power of two, --samples and --budget positive"));
    }
    let spec = Spec {
        memory: or_all(&args.memory, &Memory::ALL),
        alignments: or_all(&args.alignments, &Alignment::ALL),
        modes: or_all(&args.modes, &IommuMode::ALL),
        min_size: args.min_size,
        max_size: args.max_size,
    };
    // A missing or unbound device is named as such, before any mode is tried.
    vfio::sysfs::Sysfs::system().ensure_vfio_bound(bdf)?;
    let bar = largest_bar(bdf, &spec.modes)?;
    let limits = Limits {
        bar: bar.map_or(0, |(_, size)| size),
        anonymous: args.max_anonymous,
        hugetlb_2m: hugetlb_bytes(2048),
        hugetlb_1g: hugetlb_bytes(1 << 20),
    };
    let cells = matrix::expand(&spec, &limits);
    if cells.is_empty() {
        return Err(Fatal::exit_skip("nothing to measure: no cell fits what the machine offers"));
    }
    eprintln!(
        "[bench] {} cells on {bdf}, {} samples each, {} s budget per cell",
        cells.len(),
        args.samples,
        args.budget
    );
    let options = Options { samples: args.samples, budget: Duration::from_secs_f64(args.budget) };
    let measured = run::measure(&cells, bdf, bar.map(|(i, _)| i), &options, &mut std::io::stderr());

    print!("{}", table(&measured));
    let report = Report {
        command: std::env::args().collect(),
        kernel: rustix::system::uname().release().to_string_lossy().into_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bdf: bdf.to_string(),
        bar: bar.map(|(index, size)| BarInfo { index, size }),
        samples: args.samples,
        budget_s: args.budget,
        cells: &measured,
    };
    let json = serde_json::to_string(&report).map_err(|e| Fatal::fail(format!("JSON: {e}")))?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n")).map_err(|e| Fatal::fail(format!("{}: {e}", path.display())))?;
    }
    println!("{JSON_MARKER}{json}");
    Ok(ksft::KSFT_PASS)
}

/// The readable table: one row per cell, medians with their spread.
pub fn table(measured: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:<8} {:<23} {:>6}  {:>10} {:>21}  {:>10} {:>21}  {:>5} {:>10}  note",
        "memory", "align", "mode", "size", "map", "(min–max)", "unmap", "(min–max)", "IOPTE", "pinned"
    );
    for m in measured {
        let c = &m.cell;
        let spread = |s: &Option<stats::Spread>| match s {
            Some(s) => (seconds(s.median), format!("({}–{})", seconds(s.min), seconds(s.max))),
            None => ("-".into(), String::new()),
        };
        let (map, map_spread) = spread(&m.map);
        let (unmap, unmap_spread) = spread(&m.unmap);
        let outliers = m.map.iter().chain(&m.unmap).map(|s| s.outliers.len()).sum::<usize>();
        let mut note = m.skipped.clone().unwrap_or_default();
        if outliers > 0 {
            note = format!("{outliers} outlier(s) {note}");
        }
        let _ = writeln!(
            out,
            "{:<11} {:<8} {:<23} {:>6}  {:>10} {:>21}  {:>10} {:>21}  {:>5} {:>10}  {note}",
            c.memory.name(),
            c.alignment.name(),
            c.mode.name(),
            human(c.size),
            map,
            map_spread,
            unmap,
            unmap_spread,
            m.iopte_bytes.map_or("-".into(), human),
            m.pinned_kib.map_or("-".into(), |k| human(k * 1024)),
        );
    }
    out
}

/// `vfiotest bench-report`'s arguments.
#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// A bench run's JSON (`vfiotest bench --json`, or what `vfiotest vm -- bench` saved).
    pub run: std::path::PathBuf,
    /// Another run to compare with, e.g. the kernel before a patch: prints this run's medians
    /// over that one's, cell by cell.
    #[arg(long, value_name = "BEFORE.json")]
    pub against: Option<std::path::PathBuf>,
    /// Write the plots (bench-map.svg, bench-unmap.svg) into this directory.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<std::path::PathBuf>,
}

/// Prints what a run says about alignment, the comparison with another run, and the plots.
pub fn report_main(args: &ReportArgs) -> Result<i32, Fatal> {
    let run = report::SavedBench::load(&args.run).map_err(Fatal::fail)?;
    println!("misaligned over aligned map cost, at the largest size measured both ways ({}):", run.kernel);
    for (memory, mode, alignment, size, ratio) in report::alignment_ratios(&run) {
        println!("  {:<11} {:<23} {:<8} {:>6}  {ratio:>10.1}x", memory.name(), mode, alignment.name(), human(size));
    }
    println!("how cost grows with size from 1 MiB (log-log slope: 1 is linear, 0 flat):");
    for s in report::slopes(&run) {
        let shown = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.2}"));
        println!(
            "  {:<11} {:<8} {:<23} map {:>5}  unmap {:>5}",
            s.memory.name(),
            s.alignment.name(),
            s.mode,
            shown(s.map),
            shown(s.unmap)
        );
    }
    if let Some(before) = &args.against {
        let before = report::SavedBench::load(before).map_err(Fatal::fail)?;
        print!("{}", report::ratio_table(&before, &run));
    }
    if let Some(dir) = &args.svg {
        for file in report::plot(&run, dir).map_err(Fatal::fail)? {
            println!("wrote {}", file.display());
        }
    }
    Ok(ksft::KSFT_PASS)
}
