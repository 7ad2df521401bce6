//! The vIOMMU matrix (`vfiotest vm --viommu all`): the whole suite behind each vIOMMU in turn,
//! then one table of every program's verdicts per vIOMMU.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ksft::{KSFT_FAIL, KSFT_PASS, KSFT_SKIP, Summary};

use super::console::{PROGRAM_VERDICT, TestResult};
use super::machine::Viommu;
use crate::Fatal;

/// What one vIOMMU's run came to: its verdicts, or why it has none.
pub(super) type Cell = Result<Vec<TestResult>, String>;

/// Runs `each` behind every vIOMMU, prints the table on stderr, and returns the exit code: a
/// failure anywhere fails the matrix; all skipped is a skip.
pub(super) fn run(viommus: &[Viommu], mut each: impl FnMut(&Viommu) -> Result<(i32, Vec<TestResult>), Fatal>) -> i32 {
    let mut cells = Vec::new();
    let mut codes = Vec::new();
    for viommu in viommus {
        eprintln!("[vm] ==== behind vIOMMU {} ====", viommu.name);
        // Each vIOMMU's TAP is a document of its own; this line says whose.
        println!("# vIOMMU {}", viommu.name);
        match each(viommu) {
            Ok((code, results)) => {
                codes.push(code);
                cells.push((*viommu, Ok(results)));
            }
            Err(fatal) => {
                eprintln!("vfiotest: behind {}: {}", viommu.name, fatal.message);
                codes.push(KSFT_FAIL);
                cells.push((*viommu, Err(fatal.message)));
            }
        }
    }
    eprint!("{}", table(&cells));
    combined(&codes)
}

/// The matrix's exit code from each vIOMMU's.
fn combined(codes: &[i32]) -> i32 {
    match () {
        _ if codes.iter().any(|&c| c != KSFT_PASS && c != KSFT_SKIP) => KSFT_FAIL,
        _ if !codes.is_empty() && codes.iter().all(|&c| c == KSFT_SKIP) => KSFT_SKIP,
        _ => KSFT_PASS,
    }
}

/// `program × vIOMMU`: each cell `pass/skip/fail` (and `xfail`, `xpass` where there are any)
/// over the program's tests on every device; then each vIOMMU's note.
pub(super) fn table(cells: &[(Viommu, Cell)]) -> String {
    let mut rows: BTreeMap<String, Vec<Summary>> = BTreeMap::new();
    for (column, (_, cell)) in cells.iter().enumerate() {
        for r in cell.iter().flatten().filter(|r| r.test != PROGRAM_VERDICT) {
            let program = r.program.split(' ').next().unwrap_or(&r.program).to_owned();
            let row = rows.entry(program).or_insert_with(|| vec![Summary::default(); cells.len()]);
            row[column].add(r.verdict);
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
    let mut out = format!("[vm] verdicts per vIOMMU (pass/skip/fail{}):\n", xfail_legend(&rows));
    let _ = write!(out, "[vm] {:<width$}", "program");
    for (viommu, _) in cells {
        let _ = write!(out, "  {:>16}", viommu.name);
    }
    out.push('\n');
    for (program, row) in &rows {
        let _ = write!(out, "[vm] {program:<width$}");
        for summary in row {
            let _ = write!(out, "  {:>16}", describe(summary));
        }
        out.push('\n');
    }
    for (viommu, cell) in cells {
        match cell {
            Err(problem) => {
                let _ = writeln!(out, "[vm] {}: no verdicts: {problem}", viommu.name);
                if !viommu.note.is_empty() {
                    let _ = writeln!(out, "[vm] {}: {}", viommu.name, viommu.note);
                }
            }
            Ok(_) if !viommu.note.is_empty() => {
                let _ = writeln!(out, "[vm] {}: {}", viommu.name, viommu.note);
            }
            Ok(_) => {}
        }
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
        let text = table(&[(INTEL, Ok(intel)), (VIRTIO, Ok(virtio))]);
        let row = text.lines().find(|l| l.starts_with("[vm] p ")).unwrap();
        assert!(row.contains("1/1/0") && row.contains("0/0/1"), "{text}");
        assert!(text.contains("virtio: no interrupt remapping"), "each cell's reason: {text}");
        let broken = table(&[(INTEL, Err("the guest hung".into()))]);
        assert!(broken.contains("intel: no verdicts: the guest hung"), "{broken}");
    }

    #[test]
    fn any_failing_vioommu_fails_the_matrix() {
        assert_eq!(combined(&[KSFT_PASS, KSFT_SKIP]), KSFT_PASS);
        assert_eq!(combined(&[KSFT_PASS, KSFT_FAIL]), KSFT_FAIL);
        assert_eq!(combined(&[KSFT_SKIP, KSFT_SKIP]), KSFT_SKIP);
        assert_eq!(combined(&[KSFT_PASS, 130]), KSFT_FAIL);
    }
}
