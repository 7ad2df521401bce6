//! Joining the multi-program TAP of several runners (machines, processes) into one document,
//! as one kselftest runner would have printed it.

use std::io::Write;

use crate::{Status, TapLine, parse_line, program_exit_code, program_named, program_result_line};

/// Joins the machines' multi-program TAP into one document: one plan for all programs, then
/// each program's block whole, its result renumbered in the order it is written. One machine
/// at a time streams its block live, so a user sees progress (and the first verdict) at once;
/// the others' lines wait until that block ends.
pub struct Merger {
    /// The collection the programs belong to (`selftests: <collection>: ...`).
    collection: &'static str,
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
    /// A merger for `machines` runners running `programs` programs of `collection` in all;
    /// writes the header.
    pub fn new(collection: &'static str, machines: usize, programs: usize, out: &mut dyn Write) -> Self {
        let _ = writeln!(out, "TAP version 13\n1..{programs}");
        let _ = out.flush();
        let machines = (0..machines).map(|_| MachineTap::default()).collect();
        Self { collection, machines, live: None, written: 0 }
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
        let code = program_exit_code(status, &reason);
        let program = program_named(self.collection, &name).unwrap_or(&name);
        let _ = writeln!(out, "{}", program_result_line(self.written, self.collection, program, code));
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

    #[test]
    fn merged_tap_streams_one_machine_and_holds_the_others_whole() {
        let mut out = Vec::new();
        let mut merger = Merger::new("vfio", 2, 3, &mut out);
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
        let mut merger = Merger::new("vfio", 2, 2, &mut out);
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
