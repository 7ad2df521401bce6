//! The vIOMMU matrix (`vfiotest vm --viommu all`): the whole suite behind each vIOMMU, then
//! one table of every program's verdicts per vIOMMU.
//!
//! Each vIOMMU's run is split over machines, each program on the clock it is fastest with
//! ([`super::plan::Goal::LeastWork`]); the matrix then runs every (vIOMMU, share) pair on one
//! pool of `--jobs` machines, the costliest first, so no core idles while one vIOMMU's last
//! machine finishes. Each vIOMMU's TAP is
//! held and printed whole when its last machine ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use ksft::{KSFT_FAIL, KSFT_PASS, KSFT_SKIP, Summary};

use super::boot::{self, Machine, MachineRun, TapOut, WorkDir};
use super::console::{PROGRAM_VERDICT, TestResult};
use super::machine::{Accel, Viommu};
use super::signals::{signal_name, stop_requested};
use super::{Prepared, Session, conclude, plan, prepare, resolve_accel, this_binary};
use crate::Fatal;

/// What one vIOMMU's run came to: the verdicts it gave, and what went wrong, if anything
/// (then the verdicts are those given before).
#[derive(Debug, Default)]
pub(super) struct Cell {
    pub(super) results: Vec<TestResult>,
    pub(super) problem: Option<String>,
}

/// What one machine's boot gave.
type Booted = Result<MachineRun, Fatal>;

/// Runs the suite behind every vIOMMU in `viommus`, prints the table on stderr, and returns
/// the exit code: a failure anywhere fails the matrix; all skipped is a skip.
pub(super) fn run(session: &Session, viommus: &[Viommu]) -> Result<i32, Fatal> {
    let scratch = WorkDir::new(session.cache)?;
    let history = Mutex::new(plan::History::load(session.cache));
    let me = this_binary()?;
    let prepared = {
        let history = history.lock().unwrap_or_else(|p| p.into_inner());
        // The pool keeps both cores busy, so what counts is each machine's time, not its end.
        let goal = plan::Goal::LeastWork;
        viommus.iter().map(|v| prepare(session, v, &me, &scratch, &history, goal)).collect::<Result<Vec<_>, _>>()?
    };
    let accel = resolve_accel(session.config, &prepared[0].launch(session));
    let machines: usize = prepared.iter().map(|p| p.plan.len()).sum();
    let workers = session.config.jobs.clamp(1, machines);
    eprintln!("[vm] {} vIOMMUs, {machines} machines, {workers} at a time, the longest first", viommus.len());
    // Every (vIOMMU, share), the costliest first: longest-processing-time-first over the pool.
    let mut jobs: Vec<(usize, usize)> =
        prepared.iter().enumerate().flat_map(|(v, p)| (0..p.plan.len()).map(move |s| (v, s))).collect();
    let cost = |&(v, s): &(usize, usize)| prepared[v].plan[s].seconds;
    jobs.sort_by(|a, b| cost(b).total_cmp(&cost(a)).then(a.cmp(b)));
    let queue = Mutex::new(jobs.into_iter());
    let runs: Vec<Vec<Mutex<Option<Booted>>>> =
        prepared.iter().map(|p| p.plan.iter().map(|_| Mutex::new(None)).collect()).collect();
    let left: Vec<AtomicUsize> = prepared.iter().map(|p| AtomicUsize::new(p.plan.len())).collect();
    let taps: Vec<Mutex<TapOut>> =
        prepared.iter().map(|p| Mutex::new(TapOut::held(p.plan.len(), p.programs()))).collect();
    let cells: Vec<Mutex<Option<(i32, Cell)>>> = prepared.iter().map(|_| Mutex::new(None)).collect();
    let program = session.work.label();
    // Boots one share; the last of its vIOMMU's to end concludes that vIOMMU's run.
    let run_job = |(v, s): (usize, usize)| {
        let (p, share) = (&prepared[v], &prepared[v].plan[s]);
        let launch = p.launch(session);
        let machine =
            Machine { index: s, name: format!("{}-vm{}", p.viommu.name, s + 1), units: &share.units, tap: &taps[v] };
        let clock = share.clock.under(accel);
        let run = boot::boot(session.config, &launch, accel, session.cache, program, clock, Some(machine));
        *runs[v][s].lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
        if left[v].fetch_sub(1, Ordering::SeqCst) == 1 {
            let finished = runs[v].iter().map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).take());
            let cell = end_of(session, p, accel, finished.flatten().collect(), &taps[v], &history);
            *cells[v].lock().unwrap_or_else(|p| p.into_inner()) = Some(cell);
        }
    };
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    // A stop signal ends the machines running; none starts after it.
                    if stop_requested().is_some() {
                        break;
                    }
                    let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else { break };
                    run_job(job);
                }
            });
        }
    });
    let stopped = stop_requested();
    let mut codes = Vec::new();
    let mut cells_of = Vec::new();
    for (p, cell) in prepared.iter().zip(cells) {
        let (code, cell) = cell.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| {
            let why = stopped.map_or("not run".to_owned(), |s| format!("not run: stopped by {}", signal_name(s)));
            (KSFT_FAIL, Cell { results: Vec::new(), problem: Some(why) })
        });
        codes.push(code);
        cells_of.push((p.viommu, cell));
    }
    let columns: Vec<Column> = cells_of.iter().map(|(v, cell)| Column { name: v.name, cell, note: v.note }).collect();
    eprint!("{}", table("vIOMMU", &columns));
    Ok(match stopped {
        Some(signal) => super::outcome::signal_exit_code(signal),
        None => combined(&codes),
    })
}

/// One vIOMMU's run, once its last machine ended: its TAP printed whole under its name, its
/// verdicts concluded; its exit code and cell.
fn end_of(
    session: &Session,
    prepared: &Prepared,
    accel: Accel,
    runs: Vec<Booted>,
    tap: &Mutex<TapOut>,
    history: &Mutex<plan::History>,
) -> (i32, Cell) {
    {
        let mut tap = tap.lock().unwrap_or_else(|p| p.into_inner());
        // Each vIOMMU's TAP is a document of its own; this line says whose.
        println!("# vIOMMU {}", prepared.viommu.name);
        tap.finish();
    }
    let name = prepared.viommu.name;
    let runs = match runs.into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(runs) => runs,
        Err(fatal) => {
            eprintln!("vfiotest: behind {name}: {}", fatal.message);
            return (KSFT_FAIL, Cell { results: Vec::new(), problem: Some(fatal.message) });
        }
    };
    let results: Vec<TestResult> = runs.iter().flat_map(|r| r.console.results.iter().cloned()).collect();
    eprintln!("[vm] ==== behind vIOMMU {name} ====");
    match conclude(session, prepared, accel, runs, history, None) {
        Ok((code, results)) => (code, Cell { results, problem: None }),
        Err(fatal) => {
            eprintln!("vfiotest: behind {name}: {}", fatal.message);
            (KSFT_FAIL, Cell { results, problem: Some(fatal.message) })
        }
    }
}

/// The matrix's exit code from each column's.
pub(super) fn combined(codes: &[i32]) -> i32 {
    match () {
        _ if codes.iter().any(|&c| c != KSFT_PASS && c != KSFT_SKIP) => KSFT_FAIL,
        _ if !codes.is_empty() && codes.iter().all(|&c| c == KSFT_SKIP) => KSFT_SKIP,
        _ => KSFT_PASS,
    }
}

/// One column of a table: a vIOMMU's or a kernel's verdicts, and its note.
pub(super) struct Column<'a> {
    pub(super) name: &'a str,
    pub(super) cell: &'a Cell,
    pub(super) note: &'a str,
}

/// `program × what` (vIOMMU or kernel): each cell `pass/skip/fail` (and `xfail`, `xpass` where
/// there are any) over the program's tests on every device; then each column's problem and note.
pub(super) fn table(what: &str, columns: &[Column]) -> String {
    let mut rows: BTreeMap<String, Vec<Summary>> = BTreeMap::new();
    for (index, column) in columns.iter().enumerate() {
        for r in column.cell.results.iter().filter(|r| r.test != PROGRAM_VERDICT) {
            let program = r.program.split(' ').next().unwrap_or(&r.program).to_owned();
            let row = rows.entry(program).or_insert_with(|| vec![Summary::default(); columns.len()]);
            row[index].add(r.verdict);
        }
    }
    let describe = |s: &Summary| {
        let mut text = format!("{}/{}/{}", s.pass, s.skip, s.fail);
        if s.xfail + s.xpass > 0 {
            let _ = write!(text, " x{}/{}", s.xfail, s.xpass);
        }
        text
    };
    let width = rows.keys().map(String::len).max().unwrap_or(7).max(7);
    let column_width = columns.iter().map(|c| c.name.len()).max().unwrap_or(0).max(16);
    let mut out = format!("[vm] verdicts per {what} (pass/skip/fail{}):\n", xfail_legend(&rows));
    let _ = write!(out, "[vm] {:<width$}", "program");
    for column in columns {
        let _ = write!(out, "  {:>column_width$}", column.name);
    }
    out.push('\n');
    for (program, row) in &rows {
        let _ = write!(out, "[vm] {program:<width$}");
        for summary in row {
            let _ = write!(out, "  {:>column_width$}", describe(summary));
        }
        out.push('\n');
    }
    for column in columns {
        if let Some(problem) = &column.cell.problem {
            let given = match column.cell.results.len() {
                0 => "no verdicts".to_owned(),
                n => format!("{n} verdicts, then"),
            };
            let _ = writeln!(out, "[vm] {}: {given}: {problem}", column.name);
        }
        if !column.note.is_empty() {
            let _ = writeln!(out, "[vm] {}: {}", column.name, column.note);
        }
    }
    out
}

/// How many differing verdicts [`differences`] lists before it only counts them.
const DIFFERENCES_SHOWN: usize = 40;

/// Every test whose verdict on a later column differs from the first column's (a test one
/// side lacks counts as "ABSENT"), one line each.
pub(super) fn differences(columns: &[Column]) -> String {
    let [first, rest @ ..] = columns else { return String::new() };
    let verdicts = |cell: &Cell| -> BTreeMap<(String, String), String> {
        cell.results
            .iter()
            .filter(|r| r.test != PROGRAM_VERDICT)
            .map(|r| ((r.program.clone(), r.test.clone()), r.verdict.to_string().to_uppercase()))
            .collect()
    };
    let base = verdicts(first.cell);
    let mut lines = Vec::new();
    for column in rest {
        let other = verdicts(column.cell);
        let keys: std::collections::BTreeSet<_> = base.keys().chain(other.keys()).collect();
        for key in keys {
            let (a, b) = (base.get(key), other.get(key));
            if a != b {
                let show = |v: Option<&String>| v.map_or("ABSENT".to_owned(), Clone::clone);
                lines.push(format!(
                    "[vm]   {} {}: {} {}, {} {}",
                    key.0,
                    key.1,
                    first.name,
                    show(a),
                    column.name,
                    show(b)
                ));
            }
        }
    }
    let mut out = match lines.len() {
        0 => "[vm] every verdict is the same on each kernel\n".to_owned(),
        n => format!("[vm] {n} verdicts differ from {}'s:\n", first.name),
    };
    for line in lines.iter().take(DIFFERENCES_SHOWN) {
        out.push_str(line);
        out.push('\n');
    }
    if lines.len() > DIFFERENCES_SHOWN {
        let _ =
            writeln!(out, "[vm]   … and {} more (--results FILE keeps every verdict)", lines.len() - DIFFERENCES_SHOWN);
    }
    out
}

fn xfail_legend(rows: &BTreeMap<String, Vec<Summary>>) -> &'static str {
    let any = rows.values().flatten().any(|s| s.xfail + s.xpass > 0);
    if any { ", then xfail/xpass" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::machine::{INTEL, VIRTIO};
    use ksft::Status;

    fn result(program: &str, test: &str, verdict: Status) -> TestResult {
        TestResult { program: program.into(), test: test.into(), verdict, reason: String::new(), duration_s: 0.0 }
    }

    #[test]
    fn programs_are_rows_and_vioommus_columns() {
        let intel = vec![
            result("p 0000:00:03.0", "f.v.a", Status::Pass),
            result("p 0000:00:04.0", "f.v.a", Status::Skip),
            result("p 0000:00:04.0", PROGRAM_VERDICT, Status::Pass),
        ];
        let virtio = vec![result("p 0000:00:03.0", "f.v.a", Status::Fail)];
        let cell = |results| Cell { results, problem: None };
        let column = |v: &'static Viommu, cell| Column { name: v.name, cell, note: v.note };
        let (intel, virtio) = (cell(intel), cell(virtio));
        let text = table("vIOMMU", &[column(&INTEL, &intel), column(&VIRTIO, &virtio)]);
        let row = text.lines().find(|l| l.starts_with("[vm] p ")).unwrap();
        assert!(row.contains("1/1/0") && row.contains("0/0/1"), "{text}");
        assert!(text.contains("virtio: no interrupt remapping"), "each cell's reason: {text}");
        let hung = Cell { results: Vec::new(), problem: Some("the guest hung".into()) };
        let broken = table("vIOMMU", &[column(&INTEL, &hung)]);
        assert!(broken.contains("intel: no verdicts: the guest hung"), "{broken}");
        let late =
            Cell { results: vec![result("p 0000:00:03.0", "f.v.a", Status::Pass)], problem: Some("a stall".into()) };
        let late = table("vIOMMU", &[column(&VIRTIO, &late)]);
        assert!(late.contains("virtio: 1 verdicts, then: a stall") && late.contains("1/0/0"), "{late}");
    }

    #[test]
    fn differing_verdicts_between_kernels_are_listed() {
        let old = Cell {
            results: vec![
                result("p 0000:00:03.0", "f.type1.a", Status::Pass),
                result("p 0000:00:03.0", "f.iommufd.a", Status::Skip),
            ],
            problem: None,
        };
        let new = Cell {
            results: vec![
                result("p 0000:00:03.0", "f.type1.a", Status::Pass),
                result("p 0000:00:03.0", "f.iommufd.a", Status::Pass),
                result("q 0000:00:03.0", "f.iommufd.b", Status::Fail),
            ],
            problem: None,
        };
        let columns = [Column { name: "6.1", cell: &old, note: "" }, Column { name: "7.3", cell: &new, note: "" }];
        let text = differences(&columns);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "[vm] 2 verdicts differ from 6.1's:");
        assert!(lines[1].contains("p 0000:00:03.0 f.iommufd.a: 6.1 SKIP, 7.3 PASS"), "{text}");
        assert!(lines[2].contains("q 0000:00:03.0 f.iommufd.b: 6.1 ABSENT, 7.3 FAIL"), "{text}");
        let same = [Column { name: "a", cell: &old, note: "" }, Column { name: "b", cell: &old, note: "" }];
        assert_eq!(differences(&same), "[vm] every verdict is the same on each kernel\n");
        let table = table("kernel", &columns);
        assert!(table.starts_with("[vm] verdicts per kernel"), "{table}");
    }

    #[test]
    fn any_failing_vioommu_fails_the_matrix() {
        assert_eq!(combined(&[KSFT_PASS, KSFT_SKIP]), KSFT_PASS);
        assert_eq!(combined(&[KSFT_PASS, KSFT_FAIL]), KSFT_FAIL);
        assert_eq!(combined(&[KSFT_SKIP, KSFT_SKIP]), KSFT_SKIP);
        assert_eq!(combined(&[KSFT_PASS, 130]), KSFT_FAIL);
    }
}
