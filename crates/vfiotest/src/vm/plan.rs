//! Planning a run over several emulated machines.
//!
//! A TCG guest runs on one host thread, so a second core sits idle unless a second machine
//! runs beside it. Each machine boots the same kernel, initramfs and topology and runs a share
//! of the programs (`vfiotest.units=` on its command line names them by catalogue index); the
//! machines share nothing, so the hugetlb pool, debugfs and the 1 GiB page are each
//! machine's own. The shares are planned by what each program took before (here, else in the
//! committed prior): for a run alone, to end together; for the vIOMMU matrix, whose machines
//! share one pool, for the least machine time ([`Goal`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::config::{VmConfig, Work};
use super::machine::{Clock, INTEL};
use crate::cache::Cache;
use crate::programs::ProgramSpec;

/// What a program is guessed to take per test when it has never run here: about the average
/// of the whole suite.
const GUESS_PER_TEST_S: f64 = 0.15;

/// How much slower a program that computes runs with the guest clock counting instructions
/// (icount): measured 1.3-2x on this suite's computing programs.
const ICOUNT_SLOWDOWN: f64 = 1.6;

/// How much faster a program that mostly waits runs with icount, which skips idle time: the
/// edu driver program went from 29.8 s to 6.2 s.
const WAIT_SPEEDUP: f64 = 4.0;

/// Seconds each program (by its name in the run, e.g. `vfio_dma_mapping_test 0000:00:03.0`)
/// took in earlier runs, on a machine with icount or without, behind each vIOMMU, kept in the
/// cache; over the committed prior, so a fresh clone's first run is planned as well as a warm
/// one.
#[derive(Debug, Default)]
pub struct History {
    path: PathBuf,
    seconds: BTreeMap<String, f64>,
    prior: BTreeMap<String, f64>,
}

/// What each program took on the emulated machine when the prior was last measured
/// (`vm/refresh-durations.sh`): the planner's knowledge before this machine has any.
const PRIOR: &str = include_str!("../../../../vm/program-durations.json");

/// The history's key for `program` on a machine with `clock` behind `viommu`. The same program
/// can take much longer behind another (`vfio_dma_mapping_test`, 2-6 s more per device behind
/// `amd` and `virtio`), so a matrix planned by the default's times ends on one long machine.
/// The default vIOMMU's keys name none, as they did before there were others.
fn key(program: &str, clock: Clock, viommu: &str) -> String {
    let mut key = program.to_owned();
    if viommu != INTEL.name {
        key = format!("{key} @{viommu}");
    }
    if clock == Clock::Icount {
        key += " @icount";
    }
    key
}

impl History {
    /// The history in `cache`, empty if there is none or it can't be read.
    pub fn load(cache: &Cache) -> Self {
        let path = cache.program_durations();
        let seconds =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Self { path, seconds, prior: serde_json::from_str(PRIOR).unwrap_or_default() }
    }

    /// What `program` with `tests` tests is expected to take on a machine with icount or
    /// without, behind `viommu`: what it took there (here, else in the prior; behind this
    /// vIOMMU, else behind the default); else what it took on the other kind, scaled by what it
    /// mostly does (`waits`: icount skips its idle time; else icount slows its computing); else
    /// a guess.
    pub fn estimate(&self, program: &str, tests: usize, clock: Clock, waits: bool, viommu: &str) -> f64 {
        let other = match clock {
            Clock::Icount => Clock::Real,
            Clock::Real => Clock::Icount,
        };
        let icount = clock == Clock::Icount;
        let seen = |clock| {
            [viommu, INTEL.name].into_iter().find_map(|v| {
                let key = key(program, clock, v);
                self.seconds.get(&key).or_else(|| self.prior.get(&key)).copied()
            })
        };
        let icount_speedup = if waits { WAIT_SPEEDUP } else { 1.0 / ICOUNT_SLOWDOWN };
        match (seen(clock), seen(other)) {
            (Some(here), _) => here,
            (None, Some(there)) if icount => there / icount_speedup,
            (None, Some(there)) => there * icount_speedup,
            (None, None) if icount => tests as f64 * GUESS_PER_TEST_S,
            (None, None) => tests as f64 * GUESS_PER_TEST_S * icount_speedup,
        }
    }

    /// Records what programs took in this run behind `viommu`, each on a machine with icount
    /// or without, and saves the history (best effort: it only balances later runs). A
    /// program's time varies by a tenth from run to run on a shared host, so the history keeps
    /// an average: half the last value, half the new one.
    pub fn record(&mut self, viommu: &str, took: impl IntoIterator<Item = (String, Clock, f64)>) {
        for (program, clock, seconds) in took {
            let key = key(&program, clock, viommu);
            let average = self.seconds.get(&key).map_or(seconds, |last| (last + seconds) / 2.0);
            self.seconds.insert(key, average);
        }
        if let Ok(json) = serde_json::to_string_pretty(&self.seconds) {
            let _ = std::fs::write(&self.path, json + "\n");
        }
    }
}

/// One program of a run, for planning: what it is expected to take on a machine with icount
/// and without.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit {
    pub plain_s: f64,
    pub icount_s: f64,
}

impl Unit {
    fn prefers_icount(&self) -> bool {
        self.icount_s < self.plain_s
    }

    /// What it takes on a machine with `clock`.
    fn cost(&self, clock: Clock) -> f64 {
        match clock {
            Clock::Icount => self.icount_s,
            Clock::Real => self.plain_s,
        }
    }
}

/// One machine's share of a run: its units (by catalogue index, in order), its clock, and
/// what it is expected to take.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub units: Vec<usize>,
    pub clock: Clock,
    pub seconds: f64,
}

/// What a plan makes as short as it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The run's end: the run has the host to itself, so its machines should end together.
    SoonestEnd,
    /// The machine time spent: the run's machines join a pool that keeps every core busy (the
    /// vIOMMU matrix), where a machine's idle time is a core's, and the pool, not the run,
    /// evens out the ends. Each program goes on the clock it is fastest with.
    LeastWork,
}

/// Splits units (programs, by catalogue index) into at most `jobs` shares for `goal`. icount
/// is set per machine, and it speeds up a program that waits (on a device's timers, a reset's
/// delays) as much as it slows down one that computes. So the first machine runs with icount
/// when some program is faster that way, the others without. For [`Goal::SoonestEnd`] each
/// program, the costliest first, goes where it would end soonest at that machine's speed (LPT
/// with per-machine costs); for [`Goal::LeastWork`] every program goes on its faster clock,
/// one machine per clock. Every share holds two units or more, so that each machine prints the
/// multi-program TAP the merged output is made of; each keeps catalogue order.
pub fn plan(units: &[Unit], jobs: usize, goal: Goal) -> Vec<Share> {
    let shares = jobs.min(units.len() / 2).max(1);
    if shares == 1 {
        let (plain, icount): (f64, f64) = units.iter().fold((0.0, 0.0), |(p, i), u| (p + u.plain_s, i + u.icount_s));
        let (clock, seconds) = if icount < plain { (Clock::Icount, icount) } else { (Clock::Real, plain) };
        return vec![Share { units: (0..units.len()).collect(), clock, seconds }];
    }
    let (mut plan, mut clocks) = match goal {
        Goal::SoonestEnd => soonest_end(units, shares),
        Goal::LeastWork => {
            let (icount, real): (Vec<usize>, Vec<usize>) = (0..units.len()).partition(|&i| units[i].prefers_icount());
            [(icount, Clock::Icount), (real, Clock::Real)].into_iter().filter(|(share, _)| !share.is_empty()).unzip()
        }
    };
    // A share can end up with fewer than two units when one unit outweighs the rest: give it
    // one more from the fullest share, or fold it into another when none can spare one.
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
                let lonely_clock = clocks.remove(short);
                plan[0].extend(lonely);
                if lonely_clock == Clock::Icount {
                    clocks[0] = Clock::Icount;
                }
            }
        }
        plan.iter_mut().for_each(|s| s.sort_unstable());
    }
    plan.into_iter()
        .zip(clocks)
        .map(|(share, clock)| {
            let seconds = share.iter().map(|&i| units[i].cost(clock)).sum();
            Share { units: share, clock, seconds }
        })
        .collect()
}

/// LPT with per-machine costs over `shares` machines, the first with icount when some unit
/// is faster that way: each share (by catalogue order) and its clock.
fn soonest_end(units: &[Unit], shares: usize) -> (Vec<Vec<usize>>, Vec<Clock>) {
    let icount_first = units.iter().any(Unit::prefers_icount);
    let clocks: Vec<Clock> =
        (0..shares).map(|m| if m == 0 && icount_first { Clock::Icount } else { Clock::Real }).collect();
    let cost = |m: usize, u: &Unit| u.cost(clocks[m]);
    let best = |u: &Unit| u.plain_s.min(u.icount_s);
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &b| best(&units[b]).total_cmp(&best(&units[a])).then(a.cmp(&b)));
    let mut plan = vec![(0.0_f64, Vec::new()); shares];
    for i in order {
        let ends = |m: usize| plan[m].0 + cost(m, &units[i]);
        let machine = (0..shares).min_by(|&a, &b| ends(a).total_cmp(&ends(b)).then(a.cmp(&b))).expect("a share");
        plan[machine].0 = ends(machine);
        plan[machine].1.push(i);
    }
    let plan = plan
        .into_iter()
        .map(|(_, mut units)| {
            units.sort_unstable();
            units
        })
        .collect();
    (plan, clocks)
}

/// The programs of this run behind `viommu` split over the machines for `goal`, each with its
/// clock: one share (all of it) unless several machines are worth booting.
pub fn machines(config: &VmConfig, work: &Work, history: &History, viommu: &str, goal: Goal) -> Vec<Share> {
    let bdfs: Vec<vfio::Bdf> = config.bdfs.iter().filter_map(|b| b.parse().ok()).collect();
    // The bench measures time: one machine, its clock real. The setup proof is one program.
    if !work.is_suite() {
        let clock = if work.is_bench() { Clock::Real } else { Clock::Icount };
        return vec![Share { units: Vec::new(), clock, seconds: 0.0 }];
    }
    let catalogue = crate::programs::catalogue(&work.programs, &bdfs);
    let units: Vec<Unit> = catalogue
        .iter()
        .map(|p| {
            let waits = ProgramSpec::of(&p.name).is_none_or(|spec| spec.waits);
            let estimate = |clock| history.estimate(&p.name, p.tests.len(), clock, waits, viommu);
            Unit { plain_s: estimate(Clock::Real), icount_s: estimate(Clock::Icount) }
        })
        .collect();
    let mut plan = plan(&units, config.jobs, goal);
    if let [only] = plan.as_mut_slice() {
        // One machine runs everything: the guest needs no share named.
        only.units.clear();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn computing(costs: &[f64]) -> Vec<Unit> {
        costs.iter().map(|&c| Unit { plain_s: c, icount_s: c * ICOUNT_SLOWDOWN }).collect()
    }

    /// Six programs: 2 and 5 wait (30 s, or 6 s with icount), the rest compute (38 s, or
    /// 60.8 s with icount).
    fn two_waiting_among_computing() -> Vec<Unit> {
        let mut units = computing(&[10.0, 10.0, 10.0, 10.0, 8.0, 2.0]);
        for waiting in [2, 5] {
            units[waiting] = Unit { plain_s: 30.0, icount_s: 6.0 };
        }
        units
    }

    /// What each share takes at its machine's speed.
    fn loads(plan: &[Share], units: &[Unit]) -> Vec<f64> {
        let cost = |s: &Share, u: &Unit| u.cost(s.clock);
        plan.iter().map(|s| s.units.iter().map(|&i| cost(s, &units[i])).sum()).collect()
    }

    #[test]
    fn shares_are_balanced_cover_every_unit_once_and_keep_order() {
        let units = computing(&[20.0, 1.0, 1.0, 17.0, 6.0, 6.0, 7.0, 21.0, 3.0, 5.0]);
        let plan = plan(&units, 2, Goal::SoonestEnd);
        assert_eq!(plan.len(), 2);
        assert!(plan.iter().all(|s| s.clock == Clock::Real), "nothing is faster with icount: {plan:?}");
        let mut all: Vec<usize> = plan.iter().flat_map(|s| s.units.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..units.len()).collect::<Vec<_>>());
        assert!(plan.iter().all(|s| s.units.windows(2).all(|w| w[0] < w[1])), "{plan:?}");
        let loads = loads(&plan, &units);
        assert!((loads[0] - loads[1]).abs() <= 3.0, "{loads:?}");
    }

    #[test]
    fn programs_that_wait_share_the_icount_machine_and_computing_ones_avoid_it() {
        let units = two_waiting_among_computing();
        let plan = plan(&units, 2, Goal::SoonestEnd);
        assert!(plan[0].clock == Clock::Icount && plan[1].clock == Clock::Real, "{plan:?}");
        assert!(plan[0].units.contains(&2) && plan[0].units.contains(&5), "both waiting ones with icount: {plan:?}");
        // 12 s of waiting with icount; 38 s of computing is 60.8 s with icount or 38 s without.
        let loads = loads(&plan, &units);
        assert!(loads.iter().all(|&l| l <= 30.0), "{loads:?}");
        // One machine: the clock that makes the whole faster.
        assert_eq!(
            super::plan(&units[..3], 1, Goal::SoonestEnd)[0].clock,
            Clock::Icount,
            "20 s + 6 s with icount beats 20 s + 30 s"
        );
        assert_eq!(
            super::plan(&[units[0], units[1], units[3]], 1, Goal::SoonestEnd)[0].clock,
            Clock::Real,
            "all computing"
        );
    }

    #[test]
    fn history_averages_per_clock_and_scales_what_only_ran_on_the_other() {
        let dir = std::env::temp_dir().join(format!("vfiotest-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut history = History::load(&Cache::at(&dir));
        let intel = INTEL.name;
        assert_eq!(history.estimate("p", 10, Clock::Icount, false, intel), 10.0 * GUESS_PER_TEST_S);
        history.record(intel, [("p".to_owned(), Clock::Real, 4.0)]);
        history.record(intel, [("p".to_owned(), Clock::Real, 2.0)]);
        assert_eq!(history.estimate("p", 10, Clock::Real, false, intel), 3.0);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            near(history.estimate("p", 10, Clock::Icount, false, intel), 3.0 * ICOUNT_SLOWDOWN),
            "computing: icount slows it"
        );
        assert!(
            near(history.estimate("p", 10, Clock::Icount, true, intel), 3.0 / WAIT_SPEEDUP),
            "waiting: icount speeds it up"
        );
        history.record(intel, [("p".to_owned(), Clock::Icount, 5.0)]);
        let saved = History::load(&Cache::at(&dir));
        assert_eq!(saved.estimate("p", 10, Clock::Icount, false, intel), 5.0, "saved, by clock");
        assert_eq!(saved.estimate("p", 10, Clock::Real, false, intel), 3.0);
        // Another vIOMMU starts from the default's times and then keeps its own.
        assert_eq!(saved.estimate("p", 10, Clock::Real, false, "amd"), 3.0);
        history.record("amd", [("p".to_owned(), Clock::Real, 9.0)]);
        let saved = History::load(&Cache::at(&dir));
        assert_eq!(saved.estimate("p", 10, Clock::Real, false, "amd"), 9.0, "behind amd, its own");
        assert_eq!(saved.estimate("p", 10, Clock::Real, false, intel), 3.0, "the default's unchanged");
        assert_eq!(saved.estimate("p", 10, Clock::Icount, false, "amd"), 5.0, "the default's, on its clock");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The committed prior knows every program of the default run on at least one clock, so a
    /// fresh clone never plans by guess.
    #[test]
    fn the_prior_covers_every_program_of_the_default_run() {
        let prior: BTreeMap<String, f64> = serde_json::from_str(PRIOR).expect("vm/program-durations.json is JSON");
        let bdfs: Vec<vfio::Bdf> = super::super::machine::TOPOLOGY.iter().map(|d| d.bdf.parse().unwrap()).collect();
        for program in crate::programs::catalogue(&[], &bdfs) {
            let known =
                [Clock::Real, Clock::Icount].iter().any(|&c| prior.contains_key(&key(&program.name, c, INTEL.name)));
            assert!(known, "{} is not in vm/program-durations.json (run vm/refresh-durations.sh)", program.name);
        }
        assert!(prior.values().all(|s| s.is_finite() && *s > 0.0));
    }

    #[test]
    fn every_share_has_two_units_or_there_is_one_share() {
        assert_eq!(
            plan(&computing(&[1.0, 2.0, 3.0]), 2, Goal::SoonestEnd).len(),
            1,
            "three units can't make two shares of two"
        );
        assert_eq!(plan(&computing(&[5.0]), 4, Goal::SoonestEnd).len(), 1);
        let lopsided = plan(&computing(&[100.0, 1.0, 1.0, 1.0]), 2, Goal::SoonestEnd);
        assert!(lopsided.iter().all(|s| s.units.len() >= 2), "{lopsided:?}");
        assert_eq!(plan(&computing(&[1.0; 8]), 1, Goal::SoonestEnd)[0].units, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn least_work_puts_every_program_on_its_faster_clock() {
        let units = two_waiting_among_computing();
        let plan = plan(&units, 2, Goal::LeastWork);
        assert_eq!(plan.len(), 2, "{plan:?}");
        assert_eq!((plan[0].clock, plan[0].units.as_slice()), (Clock::Icount, &[2, 5][..]), "{plan:?}");
        assert_eq!((plan[1].clock, plan[1].units.as_slice()), (Clock::Real, &[0, 1, 3, 4][..]), "{plan:?}");
        // 12 s with icount and 38 s without: the least machine time, though the ends differ.
        assert_eq!(loads(&plan, &units), [12.0, 38.0]);
        let soonest: f64 = loads(&super::plan(&units, 2, Goal::SoonestEnd), &units).iter().sum();
        assert!(soonest > 50.0, "balancing costs machine time: {soonest}");
        // Nothing faster with icount: one machine, without it.
        let computing_only = super::plan(&computing(&[3.0, 2.0, 1.0]), 2, Goal::LeastWork);
        assert_eq!(computing_only.len(), 1, "{computing_only:?}");
        assert_eq!(computing_only[0].clock, Clock::Real);
        // A unit alone on its clock can't make a share of two: it joins the other's machine,
        // which takes its clock.
        let one_waits = super::plan(&[units[2], units[0], units[1]], 2, Goal::LeastWork);
        assert_eq!(one_waits.len(), 1, "{one_waits:?}");
        assert_eq!((one_waits[0].clock, one_waits[0].units.as_slice()), (Clock::Icount, &[0, 1, 2][..]));
    }
}
