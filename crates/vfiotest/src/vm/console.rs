//! Reading the guest: the results port (the init's marks and the suite's TAP) and the kernel's
//! console (signs that the kernel died), which arrive on separate channels, so a kernel message
//! can never split or pose as a TAP line.

use std::time::Instant;

use ksft::{Status, TapLine, parse_line};

use crate::guest::protocol::GuestMark;
use crate::programs::COLLECTION;
use serde::Serialize;

/// Kernel messages that mean the run can't be trusted.
const FATAL_PATTERNS: &[&str] = &[
    "Kernel panic - not syncing",
    "BUG: ",
    "Oops: ",
    "general protection fault",
    "Unable to handle kernel",
    "kernel BUG at",
    // A vCPU that stops taking interrupts: the run can't be trusted from here on.
    "detected stalls on CPUs",
];

/// Which of the guest's channels a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kernel's console (the first serial port).
    Console,
    /// QEMU's own messages (its stderr).
    Qemu,
    /// The results port (the second serial port): the init's marks and the suite's output.
    Results,
}

/// One test's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// The program, e.g. `vfio_dma_mapping_mmio_test 0000:00:03.0`.
    pub program: String,
    /// `fixture.variant.test`.
    pub test: String,
    /// What the test's result line says.
    pub verdict: Status,
    /// The SKIP reason or failure note.
    pub reason: String,
    /// Seconds from the test's `RUN` line (or the program's header) to its result line, as the
    /// host saw them arrive: the test's time in the guest plus console latency.
    pub duration_s: f64,
}

/// The `n` tests (not whole programs) that took longest, slowest first.
pub fn slowest<'a>(results: impl IntoIterator<Item = &'a TestResult>, n: usize) -> Vec<&'a TestResult> {
    let mut tests: Vec<&TestResult> = results.into_iter().filter(|r| r.test != PROGRAM_VERDICT).collect();
    tests.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
    tests.truncate(n);
    tests
}

/// The `test` of a result that is a whole program's verdict.
pub const PROGRAM_VERDICT: &str = "(program)";

/// Where the console stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Booting,
    Testing,
    Finished,
}

/// What a console line means to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Kernel or init chatter: kept for the log and the failure excerpt.
    Log,
    /// A line of the suite's TAP output: shown to the user.
    Tap,
    /// Our init says something (booted, setup, ...): shown to the user.
    Note(String),
    /// The suite finished with this exit code.
    Finished(i32),
    /// The probe boot reached init.
    ProbeOk,
    /// The kernel died or misbehaved fatally.
    Fatal(String),
    /// The bench's results, as JSON: kept for their file, not shown.
    BenchJson(String),
}

/// Follows the console line by line.
#[derive(Debug)]
pub struct Console {
    phase: Phase,
    /// The program whose TAP is being read, in multi-program output.
    program: String,
    nested: bool,
    /// Every test verdict so far.
    pub results: Vec<TestResult>,
    /// The suite's exit code, once it ended.
    pub exit_code: Option<i32>,
    /// The first fatal kernel message.
    pub fatal: Option<String>,
    /// What the suite left behind that it should have removed (e.g. VFs).
    pub left_behind: Vec<String>,
    /// The guest kernel found no IOMMU, so the payload never ran.
    pub no_iommu: bool,
    /// The guest's init said it booted.
    pub booted: bool,
    /// What the guest said it is (kernel, IOMMU modes, devices), for the results document.
    pub inventory: Option<crate::reports::Inventory>,
    /// When the line being read arrived.
    now: Instant,
    /// When the current test's `RUN` line arrived, and the current program's header.
    test_started: Option<Instant>,
    program_started: Option<Instant>,
    /// The running test's short name (`test` of `fixture.variant.test`), and what it said
    /// about itself (`# test: message` lines): a failure's reason.
    test_name: String,
    test_messages: Vec<String>,
    /// What the current program said outside its tests (a whole-program SKIP's reason, a
    /// refusal): its own verdict's reason.
    program_note: Option<String>,
}

impl Console {
    /// A console for a run of `single_program` (used as the program name when the guest's
    /// output is a single TAP document).
    pub fn new(single_program: &str) -> Self {
        Self {
            phase: Phase::Booting,
            program: single_program.to_owned(),
            nested: false,
            results: Vec::new(),
            exit_code: None,
            fatal: None,
            left_behind: Vec::new(),
            no_iommu: false,
            booted: false,
            inventory: None,
            now: Instant::now(),
            test_started: None,
            program_started: None,
            test_name: String::new(),
            test_messages: Vec::new(),
            program_note: None,
        }
    }

    /// A reader of TAP alone (`vfiotest run`'s own output), with no marks to wait for.
    pub fn reading_tap(single_program: &str) -> Self {
        Self { phase: Phase::Testing, ..Self::new(single_program) }
    }

    /// Takes one line of the kernel's console (without its newline): a fatal kernel message,
    /// or chatter for the log.
    pub fn feed_console(&mut self, raw: &str) -> Event {
        let line = raw.trim_end_matches('\r').trim();
        if !FATAL_PATTERNS.iter().any(|p| line.contains(p)) {
            return Event::Log;
        }
        if self.fatal.is_none() {
            self.fatal = Some(line.to_owned());
        }
        Event::Fatal(line.to_owned())
    }

    /// Takes one line of the results port (without its newline), arriving now.
    pub fn feed(&mut self, raw: &str) -> Event {
        self.feed_at(raw, Instant::now())
    }

    /// Takes one line of the results port (without its newline) that arrived at `at`: one of
    /// the init's marks, or the suite's output.
    pub fn feed_at(&mut self, raw: &str, at: Instant) -> Event {
        self.now = at;
        let line = raw.trim_end_matches('\r');
        if let Some(mark) = GuestMark::parse(line) {
            return self.marker(mark);
        }
        if let Some(json) = line.strip_prefix(crate::bench::JSON_MARKER) {
            return Event::BenchJson(json.to_owned());
        }
        if self.phase != Phase::Testing {
            return Event::Log;
        }
        match parse_line(line) {
            Some(TapLine::Comment(text)) => {
                // Nested output has one more "# " in front.
                let said = text.trim_start_matches(['#', ' ']);
                if let Some(full) = ksft::running(&text) {
                    self.test_started = Some(self.now);
                    self.test_name = full.rsplit('.').next().unwrap_or(full).to_owned();
                    self.test_messages.clear();
                } else if let Some(message) =
                    said.strip_prefix(self.test_name.as_str()).and_then(|rest| rest.strip_prefix(": "))
                    && !self.test_name.is_empty()
                {
                    self.test_messages.push(message.to_owned());
                }
                if let Some(program) = ksft::program_named(COLLECTION, &text) {
                    self.nested = true;
                    self.program = program.to_owned();
                    self.program_started = Some(self.now);
                    self.program_note = None;
                } else if self.nested {
                    match line.strip_prefix("# ").and_then(parse_line) {
                        Some(TapLine::Result { status, name, reason, .. }) => self.record(status, name, reason),
                        _ if self.test_started.is_none() => self.note_program(said),
                        _ => {}
                    }
                }
                Event::Tap
            }
            Some(TapLine::Result { status, name, reason, .. }) => {
                match ksft::program_named(COLLECTION, &name) {
                    // A program's own verdict in multi-program output, e.g. a whole-program SKIP.
                    Some(program) if self.nested => {
                        self.program = program.to_owned();
                        self.record(status, PROGRAM_VERDICT.to_owned(), reason);
                    }
                    _ if !self.nested => self.record(status, name, reason),
                    _ => {}
                }
                Event::Tap
            }
            // Anything else is the suite's own output (upstream tests print plain lines too).
            Some(_) | None => Event::Tap,
        }
    }

    fn marker(&mut self, mark: GuestMark) -> Event {
        match &mark {
            GuestMark::Begin => {
                self.phase = Phase::Testing;
                self.program_started = Some(self.now);
            }
            GuestMark::ProbeOk => return Event::ProbeOk,
            GuestMark::LeftBehind(what) => self.left_behind.push(what.clone()),
            GuestMark::End(code) => {
                self.phase = Phase::Finished;
                self.exit_code = Some(*code);
                return Event::Finished(*code);
            }
            GuestMark::NoIommu => self.no_iommu = true,
            // A mark that doesn't read is only lost to the results document.
            GuestMark::Inventory(json) => {
                self.inventory = serde_json::from_str(json).ok();
                return Event::Log;
            }
            GuestMark::Booted(_) => self.booted = true,
            GuestMark::Setup(_) => {}
        }
        Event::Note(mark.note())
    }

    /// Keeps what a program says outside its tests that may explain its own verdict: a
    /// whole-program SKIP's reason, else the first thing it said (a refusal's message).
    fn note_program(&mut self, said: &str) {
        if let Some(reason) = said.strip_prefix("1..0 # SKIP ") {
            self.program_note = Some(reason.to_owned());
        } else if self.program_note.is_none()
            && !said.is_empty()
            && !said.starts_with("Totals:")
            && !matches!(parse_line(said), Some(TapLine::Version | TapLine::Plan(_)))
        {
            self.program_note = Some(said.to_owned());
        }
    }

    fn record(&mut self, verdict: Status, name: String, reason: String) {
        // kselftest prints no reason on a failed result; the test's own lines have it.
        let reason = match (verdict, reason.is_empty()) {
            _ if name == PROGRAM_VERDICT => match (self.program_note.take(), reason.is_empty()) {
                (Some(note), true) => note,
                (Some(note), false) => format!("{note} ({reason})"),
                (None, _) => reason,
            },
            (Status::Fail, true) => std::mem::take(&mut self.test_messages).join("; "),
            _ => reason,
        };
        let started = match name == PROGRAM_VERDICT {
            true => self.program_started,
            false => self.test_started.take(),
        };
        let duration_s = started.map_or(0.0, |t| self.now.duration_since(t).as_secs_f64());
        self.results.push(TestResult { program: self.program.clone(), test: name, verdict, reason, duration_s });
    }

    /// The tally of every result, as the harness counts it ([`ksft::Summary`]).
    ///
    /// Whole-program verdicts count only when the program skipped whole (it ran no tests).
    pub fn tally(&self) -> ksft::Summary {
        let counted = |r: &&TestResult| r.test != PROGRAM_VERDICT || r.verdict == Status::Skip;
        self.results.iter().filter(counted).map(|r| r.verdict).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed_all(console: &mut Console, text: &str) -> Vec<Event> {
        text.lines().map(|l| console.feed(l)).collect()
    }

    #[test]
    fn single_program_results() {
        let mut c = Console::new("vfio_dma_mapping_mmio_test");
        let events = feed_all(
            &mut c,
            "vfiotest-vm: booted 7.3.4\r\nok 9 not-a-test-yet\nvfiotest-vm: begin\nTAP version 13\n1..2\n\
             #  RUN           f.v.map_full_bar ...\nok 1 f.v.map_full_bar\nok 2 f.v.map_partial_bar # SKIP BAR too small (size=0x800)\n\
             # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0\nvfiotest-vm: end exit=0\n",
        );
        assert_eq!(events[0], Event::Note("booted 7.3.4".into()));
        assert_eq!(events[1], Event::Log, "TAP-like lines before begin are not the suite's");
        assert_eq!(events.last(), Some(&Event::Finished(0)));
        assert_eq!(c.results.len(), 2);
        assert_eq!(c.results[1].verdict, Status::Skip);
        assert_eq!(c.results[1].reason, "BAR too small (size=0x800)");
        assert_eq!(c.results[0].program, "vfio_dma_mapping_mmio_test");
        let tally = c.tally();
        assert_eq!((tally.pass, tally.skip, tally.fail), (1, 1, 0));
    }

    #[test]
    fn a_failure_keeps_what_the_test_said() {
        let mut c = Console::new("p");
        feed_all(
            &mut c,
            "vfiotest-vm: begin\n#  RUN           f.v.t ...\n# Mapped HVA 0x1000: not a message of the test's\n\
             # t: VFIO_SET_IOMMU(...): EPERM: no interrupt remapping\n\
             # t: Test terminated by assertion\n#          FAIL  f.v.t\nnot ok 1 f.v.t\n",
        );
        assert_eq!(c.results[0].verdict, Status::Fail);
        assert_eq!(
            c.results[0].reason,
            "VFIO_SET_IOMMU(...): EPERM: no interrupt remapping; Test terminated by assertion"
        );
    }

    #[test]
    fn suite_output_is_shown_and_kernel_messages_are_not() {
        let mut c = Console::new("p");
        c.feed("vfiotest-vm: begin");
        assert_eq!(c.feed("Vendor: 1b36, Device: 0005"), Event::Tap);
        assert_eq!(c.feed_console("[   10.123456] vfio-pci 0000:00:03.0: resetting"), Event::Log);
        assert_eq!(c.feed_console("ok 1 f.v.t"), Event::Log, "the console never carries results");
        assert!(c.results.is_empty());
        assert_eq!(c.feed("# BUG: in a test's own words"), Event::Tap, "the results port can't kill the run");
    }

    #[test]
    fn nested_programs_are_keyed_by_program() {
        let mut c = Console::new("unused");
        feed_all(
            &mut c,
            "vfiotest-vm: begin\nTAP version 13\n1..2\n# selftests: vfio: prog 0000:00:03.0\n# TAP version 13\n# 1..1\n\
             # ok 1 f.v.t\nok 1 selftests: vfio: prog 0000:00:03.0\n# selftests: vfio: prog 0000:00:04.0\n# TAP version 13\n\
             # not ok 1 f.v.t\nnot ok 2 selftests: vfio: prog 0000:00:04.0 # exit=1\nvfiotest-vm: end exit=1\n",
        );
        let got: Vec<_> = c.results.iter().map(|r| (r.program.as_str(), r.test.as_str(), r.verdict)).collect();
        assert_eq!(
            got,
            [
                ("prog 0000:00:03.0", "f.v.t", Status::Pass),
                ("prog 0000:00:03.0", PROGRAM_VERDICT, Status::Pass),
                ("prog 0000:00:04.0", "f.v.t", Status::Fail),
                ("prog 0000:00:04.0", PROGRAM_VERDICT, Status::Fail),
            ]
        );
        let tally = c.tally();
        assert_eq!((tally.pass, tally.skip, tally.fail), (1, 0, 1), "program verdicts don't count twice");
        assert_eq!(c.exit_code, Some(1));
    }

    #[test]
    fn a_program_skipped_whole_keeps_its_reason() {
        let mut c = Console::new("unused");
        feed_all(
            &mut c,
            "vfiotest-vm: begin\nTAP version 13\n1..2\n# selftests: vfio: sriov 0000:00:03.0\n\
             # 1..0 # SKIP SR-IOV may not be supported by the PF: 0000:00:03.0\n\
             ok 1 selftests: vfio: sriov 0000:00:03.0 # SKIP\n# selftests: vfio: prog 0000:00:04.0\n\
             # VFIO_GROUP_GET_DEVICE_FD: EBUSY\nnot ok 2 selftests: vfio: prog 0000:00:04.0 # exit=1\n",
        );
        let got: Vec<_> = c.results.iter().map(|r| (r.verdict, r.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                (Status::Skip, "SR-IOV may not be supported by the PF: 0000:00:03.0"),
                (Status::Fail, "VFIO_GROUP_GET_DEVICE_FD: EBUSY (exit=1)"),
            ]
        );
    }

    #[test]
    fn durations_of_a_single_program() {
        let mut c = Console::new("p");
        let t0 = Instant::now();
        c.feed_at("vfiotest-vm: begin", t0);
        c.feed_at("#  RUN           f.v.t ...", t0 + Duration::from_millis(5));
        c.feed_at("ok 1 f.v.t", t0 + Duration::from_millis(1505));
        assert_eq!(c.results[0].duration_s, 1.5);
    }

    #[test]
    fn durations_run_from_run_line_to_result() {
        let mut c = Console::new("unused");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let lines = [
            (0, "vfiotest-vm: begin"),
            (0, "TAP version 13"),
            (10, "# selftests: vfio: prog 0000:00:03.0"),
            (20, "# #  RUN           f.v.slow ..."),
            (2020, "# ok 1 f.v.slow"),
            (2030, "# #  RUN           f.v.quick ..."),
            (2080, "# ok 2 f.v.quick # SKIP no"),
            (2090, "ok 1 selftests: vfio: prog 0000:00:03.0"),
        ];
        for (ms, line) in lines {
            c.feed_at(line, at(ms));
        }
        let got: Vec<_> = c.results.iter().map(|r| (r.test.as_str(), (r.duration_s * 1000.0).round() as u64)).collect();
        assert_eq!(got, [("f.v.slow", 2000), ("f.v.quick", 50), (PROGRAM_VERDICT, 2080)]);
        let slowest: Vec<_> = slowest(&c.results, 5).iter().map(|r| r.test.as_str()).collect();
        assert_eq!(slowest, ["f.v.slow", "f.v.quick"], "whole programs are not tests");
    }

    #[test]
    fn the_benchs_json_is_an_event_of_its_own() {
        let mut c = Console::new("bench");
        c.feed("vfiotest-vm: begin");
        let line = format!("{}{{\"cells\":[]}}", crate::bench::JSON_MARKER);
        assert_eq!(c.feed(&line), Event::BenchJson("{\"cells\":[]}".into()));
        assert!(c.results.is_empty());
    }

    #[test]
    fn leftovers_are_collected() {
        let mut c = Console::new("p");
        assert!(matches!(c.feed("vfiotest-vm: left behind: 0000:01:00.0 has 1 VFs"), Event::Note(_)));
        assert_eq!(c.left_behind, ["0000:01:00.0 has 1 VFs"]);
    }

    #[test]
    fn kernel_death_is_fatal() {
        let mut c = Console::new("p");
        let e = c.feed_console("[   12.3] BUG: kernel NULL pointer dereference, address: 0000000000000008");
        assert!(matches!(e, Event::Fatal(_)));
        assert!(c.fatal.as_deref().unwrap().contains("NULL pointer"));
        assert!(matches!(c.feed_console("[   12.4] Kernel panic - not syncing: Fatal exception"), Event::Fatal(_)));
        assert!(c.fatal.as_deref().unwrap().contains("NULL pointer"), "the first one is kept");
    }
}
