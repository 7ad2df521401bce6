//! A bench run read back: the ratio table of two runs (a kernel before and after a patch) and
//! the plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Deserialize;

use super::matrix::{Alignment, Memory, human};
use super::stats::seconds;

/// One cell as the JSON has it.
#[derive(Debug, Clone, Deserialize)]
pub struct CellResult {
    pub memory: Memory,
    pub alignment: Alignment,
    pub mode: String,
    pub size: u64,
    pub map: Option<Median>,
    pub unmap: Option<Median>,
    pub skipped: Option<String>,
}

/// The part of a summary the report needs.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Median {
    pub median: f64,
}

/// A bench run as the JSON has it.
#[derive(Debug, Deserialize)]
pub struct SavedBench {
    pub kernel: String,
    pub cells: Vec<CellResult>,
}

impl SavedBench {
    /// Reads a bench JSON file.
    ///
    /// # Errors
    /// The file can't be read or isn't a bench run.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads a bench run from its JSON.
    ///
    /// # Errors
    /// The text isn't a bench run.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a bench run: {e}"))
    }
}

type Key = (Memory, Alignment, String, u64);

fn key(c: &CellResult) -> Key {
    (c.memory, c.alignment, c.mode.clone(), c.size)
}

/// One row of a comparison: a cell measured in both runs, and `after / before` of its medians.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub memory: Memory,
    pub alignment: Alignment,
    pub mode: String,
    pub size: u64,
    pub map: Option<f64>,
    pub unmap: Option<f64>,
}

/// Cells measured in both runs, in `after`'s order, with `after / before` per median.
pub fn ratios(before: &SavedBench, after: &SavedBench) -> Vec<Ratio> {
    let base: BTreeMap<Key, &CellResult> = before.cells.iter().map(|c| (key(c), c)).collect();
    let ratio = |a: Option<Median>, b: Option<Median>| Some(a?.median / b.filter(|b| b.median > 0.0)?.median);
    after
        .cells
        .iter()
        .filter_map(|c| {
            let b = base.get(&key(c))?;
            Some(Ratio {
                memory: c.memory,
                alignment: c.alignment,
                mode: c.mode.clone(),
                size: c.size,
                map: ratio(c.map, b.map),
                unmap: ratio(c.unmap, b.unmap),
            })
        })
        .collect()
}

/// The comparison as a table: below 1 is faster after.
pub fn ratio_table(before: &SavedBench, after: &SavedBench) -> String {
    let mut out = format!("after ({}) / before ({}), medians; below 1 is faster after\n", after.kernel, before.kernel);
    let _ = writeln!(out, "{:<11} {:<8} {:<23} {:>6}  {:>9} {:>9}", "memory", "align", "mode", "size", "map", "unmap");
    let shown = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.3}"));
    for r in ratios(before, after) {
        let _ = writeln!(
            out,
            "{:<11} {:<8} {:<23} {:>6}  {:>9} {:>9}",
            r.memory.name(),
            r.alignment.name(),
            r.mode,
            human(r.size),
            shown(r.map),
            shown(r.unmap)
        );
    }
    out
}

/// Within one run: for each memory and mode, the misaligned medians over the aligned ones at
/// the largest size both have. The number the huge-pfnmap work is about.
pub fn alignment_ratios(run: &SavedBench) -> Vec<(Memory, String, Alignment, u64, f64)> {
    let mut out = Vec::new();
    let measured = |c: &&CellResult| c.map.is_some();
    for misaligned in [Alignment::PageOff, Alignment::TwoMibOff] {
        for c in run.cells.iter().filter(measured).filter(|c| c.alignment == misaligned) {
            let aligned =
                run.cells.iter().filter(measured).find(|a| {
                    (a.memory, a.alignment, &a.mode, a.size) == (c.memory, Alignment::Aligned, &c.mode, c.size)
                });
            if let Some(a) = aligned {
                let largest =
                    run.cells.iter().filter(measured).filter(|o| {
                        (o.memory, o.alignment, &o.mode) == (c.memory, misaligned, &c.mode) && o.size > c.size
                    });
                if largest.count() == 0 {
                    let ratio = c.map.expect("measured").median / a.map.expect("measured").median;
                    out.push((c.memory, c.mode.clone(), misaligned, c.size, ratio));
                }
            }
        }
    }
    out
}

/// How a series' cost grows with size: the least-squares slope of ln(median) over ln(size),
/// from 1 MiB up (smaller sizes measure the syscall, not the mapping). 1 is linear in size,
/// 0 is a cost that does not depend on it. One per memory, alignment and mode.
pub fn slopes(run: &SavedBench) -> Vec<Slope> {
    let mut series: BTreeMap<(Memory, Alignment, String), Vec<&CellResult>> = BTreeMap::new();
    for c in run.cells.iter().filter(|c| c.size >= 1 << 20) {
        series.entry((c.memory, c.alignment, c.mode.clone())).or_default().push(c);
    }
    series
        .into_iter()
        .map(|((memory, alignment, mode), cells)| {
            let fit = |pick: fn(&CellResult) -> Option<Median>| {
                let points: Vec<(f64, f64)> = cells
                    .iter()
                    .filter_map(|c| Some(((c.size as f64).ln(), pick(c).filter(|m| m.median > 0.0)?.median.ln())))
                    .collect();
                slope(&points)
            };
            Slope { memory, alignment, mode, map: fit(|c| c.map), unmap: fit(|c| c.unmap) }
        })
        .collect()
}

/// A series' growth with size ([`slopes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Slope {
    pub memory: Memory,
    pub alignment: Alignment,
    pub mode: String,
    /// Of the map's median; `None` under three sizes.
    pub map: Option<f64>,
    /// Of the unmap's median.
    pub unmap: Option<f64>,
}

/// The least-squares slope through `points`; `None` under three points.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) =
        points.iter().fold((0.0, 0.0), |(xy, xx), p| (xy + (p.0 - mx) * (p.1 - my), xx + (p.0 - mx).powi(2)));
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Draws one SVG per operation (map, unmap) in `dir`: a panel per memory kind, cost against
/// size on log-log axes, a line per mode and alignment. Returns the files written.
///
/// # Errors
/// The drawing or the file failed.
pub fn plot(run: &SavedBench, dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let memories: Vec<Memory> =
        Memory::ALL.into_iter().filter(|m| run.cells.iter().any(|c| c.memory == *m && c.map.is_some())).collect();
    if memories.is_empty() {
        return Err("no measured cell to plot".into());
    }
    let mut written = Vec::new();
    for (op, pick) in [("map", (|c: &CellResult| c.map) as fn(&CellResult) -> Option<Median>), ("unmap", |c| c.unmap)] {
        let path = dir.join(format!("bench-{op}.svg"));
        draw(run, &memories, op, pick, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(
    run: &SavedBench,
    memories: &[Memory],
    op: &str,
    pick: fn(&CellResult) -> Option<Median>,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (640 * memories.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, memories.len()));
    let modes: Vec<String> = {
        let mut m: Vec<String> = run.cells.iter().map(|c| c.mode.clone()).collect();
        m.dedup();
        m.sort();
        m.dedup();
        m
    };
    for (panel, &memory) in panels.iter().zip(memories) {
        let points: Vec<(&CellResult, f64)> =
            run.cells.iter().filter(|c| c.memory == memory).filter_map(|c| Some((c, pick(c)?.median))).collect();
        // Sizes are powers of two: the x axis is their exponent, labelled as sizes, which is
        // a log scale whose ticks fall on whole sizes.
        let log2 = |size: u64| f64::from(size.ilog2());
        let (xmin, xmax) =
            points.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), (c, _)| (lo.min(log2(c.size)), hi.max(log2(c.size))));
        let (ymin, ymax) = points.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), (_, s)| (lo.min(*s), hi.max(*s)));
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{op}: {} ({})", memory.name(), run.kernel), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xmin - 0.5..xmax + 0.5, (ymin * 0.5..ymax * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("size")
            .y_desc("seconds")
            .x_labels(((xmax - xmin) as usize + 2).min(14))
            .x_label_formatter(&|x| match x.fract() {
                0.0 => human(1u64 << (*x as u32)),
                _ => String::new(),
            })
            .y_label_formatter(&|y| seconds(*y))
            .draw()?;
        for (m, mode) in modes.iter().enumerate() {
            for alignment in Alignment::ALL {
                let line: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|(c, _)| &c.mode == mode && c.alignment == alignment)
                    .map(|(c, s)| (log2(c.size), *s))
                    .collect();
                if line.is_empty() {
                    continue;
                }
                let color = Palette99::pick(m).to_rgba();
                let style = match alignment {
                    Alignment::Aligned => color.stroke_width(2),
                    Alignment::PageOff => color.stroke_width(1),
                    Alignment::TwoMibOff => color.mix(0.5).stroke_width(1),
                };
                chart
                    .draw_series(LineSeries::new(line.clone(), style))?
                    .label(format!("{mode} {}", alignment.name()))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
                chart.draw_series(line.iter().map(|&p| Circle::new(p, 2, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(alignment: Alignment, mode: &str, size: u64, map: f64, unmap: f64) -> CellResult {
        CellResult {
            memory: Memory::Bar,
            alignment,
            mode: mode.into(),
            size,
            map: Some(Median { median: map }),
            unmap: Some(Median { median: unmap }),
            skipped: None,
        }
    }

    #[test]
    fn ratios_match_cells_by_memory_alignment_mode_and_size() {
        let before = SavedBench {
            kernel: "7.3.4".into(),
            cells: vec![
                cell(Alignment::Aligned, "vfio_type1v2_iommu", 1 << 30, 1e-4, 4e-2),
                cell(Alignment::Aligned, "iommufd", 1 << 30, 4e-5, 3e-5),
            ],
        };
        let after = SavedBench {
            kernel: "7.3.4+patch".into(),
            cells: vec![
                cell(Alignment::Aligned, "vfio_type1v2_iommu", 1 << 30, 1e-4, 4e-4),
                cell(Alignment::PageOff, "vfio_type1v2_iommu", 1 << 30, 0.3, 4e-2),
            ],
        };
        let r = ratios(&before, &after);
        assert_eq!(r.len(), 1, "only cells in both runs: {r:?}");
        assert_eq!(r[0].mode, "vfio_type1v2_iommu");
        assert!((r[0].map.unwrap() - 1.0).abs() < 1e-12);
        assert!((r[0].unmap.unwrap() - 0.01).abs() < 1e-12);
        let table = ratio_table(&before, &after);
        assert!(table.contains("after (7.3.4+patch) / before (7.3.4)"), "{table}");
        assert!(table.contains("0.010"), "{table}");
    }

    #[test]
    fn alignment_ratio_is_taken_at_the_largest_size_both_have() {
        let run = SavedBench {
            kernel: "k".into(),
            cells: vec![
                cell(Alignment::Aligned, "t", 1 << 20, 1e-4, 1e-4),
                cell(Alignment::Aligned, "t", 1 << 30, 1e-4, 1e-4),
                cell(Alignment::PageOff, "t", 1 << 20, 1e-3, 1e-4),
                cell(Alignment::PageOff, "t", 1 << 30, 0.3, 1e-4),
            ],
        };
        let r = alignment_ratios(&run);
        assert_eq!(r.len(), 1);
        let (memory, mode, alignment, size, ratio) = &r[0];
        assert_eq!((*memory, mode.as_str(), *alignment, *size), (Memory::Bar, "t", Alignment::PageOff, 1 << 30));
        assert!((ratio - 3000.0).abs() < 1e-6);
    }

    #[test]
    fn slopes_tell_linear_from_flat() {
        let sizes = [1u64 << 20, 1 << 24, 1 << 28, 1 << 32];
        let cells = sizes
            .iter()
            .flat_map(|&size| {
                let linear = size as f64 * 1e-9;
                [cell(Alignment::PageOff, "t", size, linear, 2e-5), cell(Alignment::Aligned, "t", size, 9e-5, linear)]
            })
            .chain([cell(Alignment::Aligned, "u", 1 << 20, 1.0, 1.0)])
            .collect();
        let found = slopes(&SavedBench { kernel: "k".into(), cells });
        let get = |a: Alignment, mode: &str| found.iter().find(|s| s.alignment == a && s.mode == mode).unwrap();
        let misaligned = get(Alignment::PageOff, "t");
        assert!((misaligned.map.unwrap() - 1.0).abs() < 1e-9 && misaligned.unmap.unwrap().abs() < 1e-9);
        let aligned = get(Alignment::Aligned, "t");
        assert!(aligned.map.unwrap().abs() < 1e-9 && (aligned.unmap.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(get(Alignment::Aligned, "u").map, None, "one point is no slope");
    }

    #[test]
    fn a_run_plots_to_svg() {
        let run = SavedBench {
            kernel: "k".into(),
            cells: vec![
                cell(Alignment::Aligned, "t", 4096, 1e-5, 1e-5),
                cell(Alignment::Aligned, "t", 1 << 30, 1e-4, 4e-2),
                cell(Alignment::PageOff, "t", 1 << 30, 0.3, 4e-2),
            ],
        };
        let dir = std::env::temp_dir().join(format!("vfiotest-plot-{}", std::process::id()));
        let files = plot(&run, &dir).unwrap();
        assert_eq!(files.len(), 2);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("map: bar"), "{}", &svg[..200.min(svg.len())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
