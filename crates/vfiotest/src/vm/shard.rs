//! Running the suite on several emulated machines at once.
//!
//! A TCG guest runs on one host thread, so a second core sits idle unless a second machine
//! runs beside it. Each machine boots the same kernel, initramfs and topology and runs a share
//! of the programs (`vfiotest.units=` on its command line names them by catalogue index); the
//! machines share nothing, so the hugetlb pool, debugfs and the 1 GiB page are each
//! machine's own. The shares are balanced by what each program took last time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ksft::{Status, TapLine, parse_line};

/// What a program is guessed to take per test when it has never run here: about the average
/// of the whole suite under icount.
const GUESS_PER_TEST_S: f64 = 0.2;

/// Seconds each program (by its name in the run, e.g. `vfio_dma_mapping_test 0000:00:03.0`)
/// took in earlier runs, kept in the cache.
#[derive(Debug, Default)]
pub struct History {
    path: PathBuf,
    seconds: BTreeMap<String, f64>,
}

impl History {
    /// The history in `cache`, empty if there is none or it can't be read.
    pub fn load(cache: &Path) -> Self {
        let path = cache.join("program-durations.json");
        let seconds =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Self { path, seconds }
    }

    /// What `program` with `tests` tests is expected to take.
    pub fn estimate(&self, program: &str, tests: usize) -> f64 {
        self.seconds.get(program).copied().unwrap_or(tests as f64 * GUESS_PER_TEST_S)
    }

    /// Records what programs took in this run and saves the history (best effort: it only
    /// balances later runs). A program's time varies by a tenth from run to run on a shared
    /// host, so the history keeps an average: half the last value, half the new one.
    pub fn record(&mut self, took: impl IntoIterator<Item = (String, f64)>) {
        for (program, seconds) in took {
            let average = self.seconds.get(&program).map_or(seconds, |last| (last + seconds) / 2.0);
            self.seconds.insert(program, average);
        }
        if let Ok(json) = serde_json::to_string_pretty(&self.seconds) {
            let _ = std::fs::write(&self.path, json + "\n");
        }
    }
}

/// Splits units (programs, by catalogue index) with these costs into at most `jobs` shares of
/// near-equal total cost: the costliest first, each to the least loaded share (LPT). Every
/// share holds two units or more, so that each machine prints the multi-program TAP the
/// merged output is made of; each share keeps catalogue order.
pub fn plan(costs: &[f64], jobs: usize) -> Vec<Vec<usize>> {
    let shares = jobs.min(costs.len() / 2).max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut plan = vec![(0.0_f64, Vec::new()); shares];
    for unit in order {
        let (load, units) = plan
            .iter_mut()
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.len().cmp(&b.1.len())))
            .expect("at least one share");
        *load += costs[unit];
        units.push(unit);
    }
    let mut plan: Vec<Vec<usize>> = plan
        .into_iter()
        .map(|(_, mut units)| {
            units.sort_unstable();
            units
        })
        .collect();
    // LPT can leave a share with one unit when one unit outweighs the rest: give it one more
    // from the fullest share, or fold it into another when none can spare one.
    while plan.len() > 1 {
        let Some(short) = plan.iter().position(|s| s.len() < 2) else { break };
        let donor = (0..plan.len()).max_by_key(|&i| plan[i].len()).expect("two shares or more");
        match plan[donor].len() > 2 {
            true => {
                let moved = plan[donor].pop().expect("more than two");
                plan[short].push(moved);
            }
            false => {
                let lonely = plan.remove(short);
                plan[0].extend(lonely);
            }
        }
        plan.iter_mut().for_each(|s| s.sort_unstable());
    }
    plan
}

/// Joins the machines' multi-program TAP into one document: one plan for all programs, then
/// each program's block whole, its result renumbered in the order it is written. One machine
/// at a time streams its block live, so a user sees progress (and the first verdict) at once;
/// the others' lines wait until that block ends.
pub struct Merger {
    machines: Vec<MachineTap>,
    /// The machine whose block is being written as it arrives.
    live: Option<usize>,
    written: usize,
}

/// What one machine has sent that isn't written yet.
#[derive(Default)]
struct MachineTap {
    /// Lines of the block in progress.
    open: Vec<String>,
    /// Blocks that ended, each with its result line (status, name, reason) last.
    ended: Vec<(Vec<String>, (Status, String, String))>,
}

impl Merger {
    /// A merger for `machines` machines running `programs` programs in all; writes the header.
    pub fn new(machines: usize, programs: usize, out: &mut dyn Write) -> Self {
        let _ = writeln!(out, "TAP version 13\n1..{programs}");
        let _ = out.flush();
        Self { machines: (0..machines).map(|_| MachineTap::default()).collect(), live: None, written: 0 }
    }

    /// Takes one TAP line from `machine`.
    pub fn line(&mut self, machine: usize, line: &str, out: &mut dyn Write) {
        let top_level = !line.starts_with('#');
        match parse_line(line) {
            // Each machine's own header and plan give way to the merged one.
            Some(TapLine::Version | TapLine::Plan(_)) if top_level => {}
            Some(TapLine::Result { status, name, reason, .. }) if top_level => {
                let block = std::mem::take(&mut self.machines[machine].open);
                match self.live == Some(machine) {
                    // The live block ends here, right after its own lines.
                    true => {
                        self.write_block(block, (status, name, reason), out);
                        self.live = None;
                    }
                    false => self.machines[machine].ended.push((block, (status, name, reason))),
                }
                self.write_ready(out);
            }
            _ => {
                self.machines[machine].open.push(line.to_owned());
                if self.live.is_none() {
                    self.live = Some(machine);
                }
                self.write_ready(out);
            }
        }
        let _ = out.flush();
    }

    /// Writes the live machine's lines as they come. When no block is live: every block that
    /// ended meanwhile, then the next block in progress becomes live. (A machine only collects
    /// ended blocks while another is live.)
    fn write_ready(&mut self, out: &mut dyn Write) {
        if self.live.is_none() {
            for machine in 0..self.machines.len() {
                for (lines, result) in std::mem::take(&mut self.machines[machine].ended) {
                    self.write_block(lines, result, out);
                }
            }
            self.live = self.machines.iter().position(|m| !m.open.is_empty());
        }
        if let Some(live) = self.live {
            for line in self.machines[live].open.drain(..) {
                let _ = writeln!(out, "{line}");
            }
        }
    }

    fn write_block(
        &mut self,
        lines: Vec<String>,
        (status, name, reason): (Status, String, String),
        out: &mut dyn Write,
    ) {
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        self.written += 1;
        let ok = if status.is_ok() { "ok" } else { "not ok" };
        let directive = match (status, reason.is_empty()) {
            (Status::Skip, _) => " # SKIP".to_owned(),
            (_, false) => format!(" # {reason}"),
            (_, true) => String::new(),
        };
        let _ = writeln!(out, "{ok} {} {name}{directive}", self.written);
    }

    /// Writes what is left (a machine cut short), so nothing is lost.
    pub fn flush(&mut self, out: &mut dyn Write) {
        self.live = None;
        self.write_ready(out);
        for machine in &mut self.machines {
            for line in machine.open.drain(..) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(plan: &[Vec<usize>], costs: &[f64]) -> Vec<f64> {
        plan.iter().map(|s| s.iter().map(|&u| costs[u]).sum()).collect()
    }

    #[test]
    fn shares_are_balanced_cover_every_unit_once_and_keep_order() {
        let costs = [20.0, 1.0, 1.0, 17.0, 6.0, 6.0, 7.0, 21.0, 3.0, 5.0];
        let plan = plan(&costs, 2);
        assert_eq!(plan.len(), 2);
        let mut all: Vec<usize> = plan.concat();
        all.sort_unstable();
        assert_eq!(all, (0..costs.len()).collect::<Vec<_>>());
        assert!(plan.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])), "{plan:?}");
        let loads = total(&plan, &costs);
        assert!((loads[0] - loads[1]).abs() <= 3.0, "{loads:?}");
    }

    #[test]
    fn history_averages_and_guesses_what_never_ran() {
        let dir = std::env::temp_dir().join(format!("vfiotest-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut history = History::load(&dir);
        assert_eq!(history.estimate("p", 10), 10.0 * GUESS_PER_TEST_S);
        history.record([("p".to_owned(), 4.0)]);
        history.record([("p".to_owned(), 2.0)]);
        assert_eq!(history.estimate("p", 10), 3.0);
        assert_eq!(History::load(&dir).estimate("p", 10), 3.0, "saved");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_share_has_two_units_or_there_is_one_share() {
        assert_eq!(plan(&[1.0, 2.0, 3.0], 2).len(), 1, "three units can't make two shares of two");
        assert_eq!(plan(&[5.0], 4), vec![vec![0]]);
        let lopsided = plan(&[100.0, 1.0, 1.0, 1.0], 2);
        assert!(lopsided.iter().all(|s| s.len() >= 2), "{lopsided:?}");
        assert_eq!(plan(&[1.0; 8], 1), vec![(0..8).collect::<Vec<_>>()]);
    }

    #[test]
    fn merged_tap_streams_one_machine_and_holds_the_others_whole() {
        let mut out = Vec::new();
        let mut merger = Merger::new(2, 3, &mut out);
        let feed = |merger: &mut Merger, out: &mut Vec<u8>, machine, line| merger.line(machine, line, out);
        feed(&mut merger, &mut out, 1, "TAP version 13");
        feed(&mut merger, &mut out, 0, "TAP version 13");
        feed(&mut merger, &mut out, 0, "1..2");
        // Machine 0 starts a block first: it streams.
        feed(&mut merger, &mut out, 0, "# selftests: vfio: p1");
        feed(&mut merger, &mut out, 1, "1..1");
        feed(&mut merger, &mut out, 1, "# selftests: vfio: p2");
        feed(&mut merger, &mut out, 0, "# 1..1");
        assert!(String::from_utf8_lossy(&out).ends_with("# selftests: vfio: p1\n# 1..1\n"), "streamed at once");
        // Machine 1's block ends while machine 0's is live: held whole.
        feed(&mut merger, &mut out, 1, "# 1..0 # SKIP no PF");
        feed(&mut merger, &mut out, 1, "ok 1 selftests: vfio: p2 # SKIP");
        assert!(!String::from_utf8_lossy(&out).contains("p2"), "held until p1 ends");
        feed(&mut merger, &mut out, 0, "# ok 1 t");
        feed(&mut merger, &mut out, 0, "ok 1 selftests: vfio: p1");
        feed(&mut merger, &mut out, 0, "# selftests: vfio: p3");
        feed(&mut merger, &mut out, 0, "not ok 2 selftests: vfio: p3 # exit=1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TAP version 13\n1..3\n# selftests: vfio: p1\n# 1..1\n# ok 1 t\nok 1 selftests: vfio: p1\n\
             # selftests: vfio: p2\n# 1..0 # SKIP no PF\nok 2 selftests: vfio: p2 # SKIP\n\
             # selftests: vfio: p3\nnot ok 3 selftests: vfio: p3 # exit=1\n"
        );

        // A live machine other than the first: its result follows its own lines, then what
        // the first machine held.
        let mut out = Vec::new();
        let mut merger = Merger::new(2, 2, &mut out);
        for (machine, line) in [
            (1, "# selftests: vfio: b"),
            (0, "# selftests: vfio: a"),
            (0, "ok 1 selftests: vfio: a"),
            (1, "# b's line"),
            (1, "ok 1 selftests: vfio: b"),
        ] {
            merger.line(machine, line, &mut out);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TAP version 13\n1..2\n# selftests: vfio: b\n# b's line\nok 1 selftests: vfio: b\n\
             # selftests: vfio: a\nok 2 selftests: vfio: a\n"
        );
    }
}
