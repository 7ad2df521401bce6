//! Running tests: one child process per test, kselftest_harness's output and exit codes.

use std::any::Any;
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions, kill_process_group, setpgid, setrlimit, waitpid};

use crate::sys::{self, Forked};
use crate::{CHILD_ENV, Filters, KSFT_FAIL, KSFT_PASS, KSFT_SKIP, Status, Tap, Test, Verdict};

/// Marks the child's last line, which carries the SKIP reason back to the harness (upstream
/// passes it through shared memory). Newlines in it are escaped so it stays one line.
const REASON_MARK: &str = "\u{1f}ksft-reason:";

fn escape_reason(reason: &str) -> String {
    reason.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape_reason(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// kselftest.h's `ksft_print_header()`: the version line, unless `KSFT_TAP_LEVEL` says an
/// outer runner printed it already.
fn print_header(tap: &mut Tap<'_>) {
    if std::env::var_os("KSFT_TAP_LEVEL").is_none() {
        tap.line("TAP version 13");
    }
}

/// Why a program's prologue ended it before its first test, and how upstream's `main()` says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The reason on stderr and exit 4, before any TAP ("No driver found for device ...").
    Skip(String),
    /// `ksft_exit_skip()` before the plan: `1..0 # SKIP reason` on stdout, exit 4.
    ExitSkip(String),
    /// Setup failed: the message on stderr, exit 1.
    Fail(String),
}

/// What a program does once, in the harness process (never in a test's child), before its
/// first test: `Ok` holds whatever must live until the last test is done, and its drop is the
/// program's teardown (upstream's `atexit` handlers); `Err` ends the program at once.
/// What it prints goes where the program's output goes, before its TAP plan.
pub type Prologue = Arc<dyn Fn(&mut Tap<'_>) -> Result<Option<Box<dyn Any>>, Refusal> + Send + Sync>;

/// A named set of tests: one upstream selftest program (on one device).
#[derive(Clone)]
pub struct Program {
    /// The name, e.g. `vfio_dma_mapping_mmio_test` (plus the BDF when several run).
    pub name: String,
    /// Its tests in order.
    pub tests: Vec<Test>,
    /// Runs before the tests; see [`Prologue`].
    pub prologue: Option<Prologue>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name)
            .field("tests", &self.tests)
            .field("prologue", &self.prologue.is_some())
            .finish()
    }
}

impl Program {
    /// A program without a prologue.
    pub fn new(name: impl Into<String>, tests: Vec<Test>) -> Self {
        Self { name: name.into(), tests, prologue: None }
    }

    /// Sets the prologue.
    pub fn with_prologue(
        mut self,
        prologue: impl Fn(&mut Tap<'_>) -> Result<Option<Box<dyn Any>>, Refusal> + Send + Sync + 'static,
    ) -> Self {
        self.prologue = Some(Arc::new(prologue));
        self
    }

    fn run_prologue(&self, output: &mut Tap<'_>) -> Result<Option<Box<dyn Any>>, Refusal> {
        self.prologue.as_ref().map_or(Ok(None), |prologue| prologue(output))
    }
}

/// Prints a refusal where the program would (its reason on stderr, `ksft_exit_skip` on
/// stdout) and returns the program's exit code.
fn refuse(refusal: &Refusal, output: &mut Tap<'_>) -> i32 {
    match refusal {
        Refusal::Skip(reason) => {
            output.err_line(reason);
            KSFT_SKIP
        }
        Refusal::ExitSkip(reason) => {
            output.line(format!("1..0 # SKIP {reason}"));
            KSFT_SKIP
        }
        Refusal::Fail(message) => {
            output.err_line(message);
            KSFT_FAIL
        }
    }
}

/// Counts, as in kselftest's `# Totals` line: the one tally of verdicts, for the harness and for
/// whatever reads its TAP back. As kselftest counts them, an XPASS is not a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Summary {
    /// Passed.
    pub pass: u32,
    /// Failed.
    pub fail: u32,
    /// Expected failures.
    pub xfail: u32,
    /// Unexpected passes.
    pub xpass: u32,
    /// Skipped.
    pub skip: u32,
}

impl Summary {
    /// Counts one more verdict.
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Pass => self.pass += 1,
            Status::Skip => self.skip += 1,
            Status::XFail => self.xfail += 1,
            Status::XPass => self.xpass += 1,
            Status::Fail => self.fail += 1,
        }
    }

    /// How many verdicts were counted.
    pub fn tests(&self) -> u32 {
        self.pass + self.fail + self.xfail + self.xpass + self.skip
    }

    /// Adds another tally's counts.
    pub fn merge(&mut self, other: Summary) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.xfail += other.xfail;
        self.xpass += other.xpass;
        self.skip += other.skip;
    }

    /// The kselftest exit code for a run with these counts.
    pub fn exit_code(&self) -> i32 {
        if self.fail > 0 { KSFT_FAIL } else { KSFT_PASS }
    }
}

impl FromIterator<Status> for Summary {
    fn from_iter<I: IntoIterator<Item = Status>>(statuses: I) -> Self {
        let mut tally = Self::default();
        statuses.into_iter().for_each(|status| tally.add(status));
        tally
    }
}

/// Runs the enabled tests of every program and returns the kselftest exit code.
///
/// One program prints exactly what its C counterpart prints: TAP on `out`, the harness's and
/// the tests' diagnostics on `err`. Several print as the kselftest runner does: an outer plan
/// with one result per program, each program's output (stderr merged) indented by `# `.
pub fn run_programs(
    collection: &str,
    programs: &[Program],
    filters: &Filters,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if let [program] = programs {
        let mut tap = Tap::with_stderr(out, err);
        return match program.run_prologue(&mut tap) {
            Err(refusal) => refuse(&refusal, &mut tap),
            Ok(_teardown) => run_program(program, filters, &mut tap).exit_code(),
        };
    }
    let mut tap = Tap::new(out);
    tap.line("TAP version 13");
    tap.line(format!("1..{}", programs.len()));
    let mut failed = false;
    for (number, program) in programs.iter().enumerate() {
        tap.msg(crate::tap::program_header(collection, &program.name));
        let teardown = match program.run_prologue(&mut tap.nested()) {
            Ok(teardown) => teardown,
            Err(refusal) => {
                let code = refuse(&refusal, &mut tap.nested());
                let line = crate::tap::program_result_line(number + 1, collection, &program.name, code);
                failed |= matches!(refusal, Refusal::Fail(_));
                tap.line(line);
                continue;
            }
        };
        let summary = run_program(program, filters, &mut tap.nested());
        drop(teardown);
        // A program whose tests all skipped still exits 0, and the kselftest runner marks only
        // exit code 4 as SKIP.
        let line = crate::tap::program_result_line(number + 1, collection, &program.name, summary.exit_code());
        failed |= summary.exit_code() == KSFT_FAIL;
        tap.line(line);
    }
    if failed { KSFT_FAIL } else { KSFT_PASS }
}

/// Prints upstream's `-l` table of one program to `err`: each fixture with its variants and its
/// tests side by side, fixtures apart by a rule.
pub fn list_tests(program: &Program, err: &mut dyn Write) {
    let mut fixtures: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    for test in &program.tests {
        if fixtures.last().is_none_or(|(name, ..)| *name != test.fixture) {
            fixtures.push((&test.fixture, Vec::new(), Vec::new()));
        }
        let (_, variants, names) = fixtures.last_mut().expect("pushed above");
        if !variants.contains(&test.variant.as_str()) {
            variants.push(&test.variant);
        }
        if !names.contains(&test.name.as_str()) {
            names.push(&test.name);
        }
    }
    for (index, (fixture, variants, names)) in fixtures.iter().enumerate() {
        let _ = match index {
            0 => writeln!(err, "{:<20} {:<25} TEST", "# FIXTURE", "VARIANT"),
            _ => writeln!(err, "{}", "-".repeat(80)),
        };
        for row in 0..variants.len().max(names.len()) {
            let fixture = if row == 0 { *fixture } else { "" };
            let variant = variants.get(row).copied().unwrap_or("");
            let _ = writeln!(err, "{fixture:<20} {variant:<25} {}", names.get(row).copied().unwrap_or(""));
        }
    }
}

fn run_program(program: &Program, filters: &Filters, tap: &mut Tap<'_>) -> Summary {
    let enabled: Vec<&Test> = program.tests.iter().filter(|t| filters.enabled(t)).collect();
    let cases: BTreeSet<(&str, &str)> = enabled.iter().map(|t| (t.fixture.as_str(), t.variant.as_str())).collect();
    print_header(tap);
    tap.line(format!("1..{}", enabled.len()));
    tap.msg(format!("Starting {} tests from {} test cases.", enabled.len(), cases.len()));
    let mut summary = Summary::default();
    for (number, test) in enabled.iter().enumerate() {
        let name = test.full_name();
        tap.msg(crate::tap::run_marker(&name));
        let (status, reason) = run_in_child(&program.name, test, tap);
        let (status, reason) = test.expected(status, reason);
        tap.msg(format!("         {:>4}  {name}", if status.is_ok() { "OK" } else { "FAIL" }));
        summary.add(status);
        let number = number + 1;
        tap.line(crate::tap::result_line(number, &name, status, reason.as_deref()));
    }
    let passed = summary.tests() - summary.fail;
    tap.msg(format!(
        "{}: {passed} / {} tests passed.",
        if summary.fail > 0 { "FAILED" } else { "PASSED" },
        summary.tests()
    ));
    if summary.skip > 0 {
        tap.msg(format!(
            "{} skipped test(s) detected. Consider enabling relevant config options to improve coverage.",
            summary.skip
        ));
    }
    tap.msg(format!(
        "Totals: pass:{} fail:{} xfail:{} xpass:{} skip:{} error:0",
        summary.pass, summary.fail, summary.xfail, summary.xpass, summary.skip
    ));
    summary
}

/// The value of [`CHILD_ENV`] that names `test` of `program`: test names repeat across
/// programs (one program per device), so both are needed.
fn child_key(program: &str, test: &Test) -> String {
    format!("{program}/{}", test.full_name())
}

/// Which of the child's streams a line came from.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// A test's child process.
enum TestChild {
    /// Forked from the harness, as kselftest_harness.h does: it runs the test and exits.
    Forked(Pid),
    /// This executable run again with [`CHILD_ENV`] naming the test, when the harness has
    /// threads of its own and can't fork safely.
    Spawned(std::process::Child),
}

impl TestChild {
    fn pid(&self) -> Option<Pid> {
        match self {
            Self::Forked(pid) => Some(*pid),
            Self::Spawned(child) => Pid::from_raw(child.id() as i32),
        }
    }

    /// Its status if it has exited, else `None` (also if it can't be waited for).
    fn try_wait(&mut self) -> Option<ExitStatus> {
        match self {
            Self::Forked(pid) => reap(*pid, WaitOptions::NOHANG),
            Self::Spawned(child) => child.try_wait().ok().flatten(),
        }
    }

    /// Waits for it to exit; `None` if it can't be waited for.
    fn wait(&mut self) -> Option<ExitStatus> {
        match self {
            Self::Forked(pid) => reap(*pid, WaitOptions::empty()),
            Self::Spawned(child) => child.wait().ok(),
        }
    }
}

/// `waitpid()` for a forked child, again when a signal interrupts it (as std's `wait` does).
fn reap(pid: Pid, options: WaitOptions) -> Option<ExitStatus> {
    loop {
        match waitpid(Some(pid), options) {
            Err(rustix::io::Errno::INTR) => continue,
            waited => return waited.ok().flatten().map(|(_, status)| ExitStatus::from_raw(status.as_raw())),
        }
    }
}

/// Starts the child that runs `test` alone, in a process group of its own (so a timeout kills
/// everything it started), its stdin `/dev/null` and its stdout and stderr the pipes given.
/// Forks, as upstream does; re-runs this executable when the harness has other threads.
fn start_child(program: &str, test: &Test, out: OwnedFd, err: OwnedFd) -> io::Result<TestChild> {
    match sys::fork_if_single_threaded()? {
        Some(Forked::Child) => {
            let redirected = (|| {
                rustix::stdio::dup2_stdin(std::fs::File::open("/dev/null")?)?;
                rustix::stdio::dup2_stdout(&out)?;
                rustix::stdio::dup2_stderr(&err)?;
                setpgid(None, None)?;
                Ok::<_, io::Error>(())
            })();
            drop((out, err));
            let code = match redirected {
                Ok(()) => run_test(test),
                Err(e) => {
                    eprintln!("# {}: setting up the test's child: {e}", test.name);
                    KSFT_FAIL
                }
            };
            sys::exit_child(code)
        }
        Some(Forked::Parent(pid)) => {
            // The child sets its group too: whichever runs first, a kill finds the group.
            let _ = setpgid(Some(pid), Some(pid));
            Ok(TestChild::Forked(pid))
        }
        None => Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(CHILD_ENV, child_key(program, test))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .map(TestChild::Spawned),
    }
}

/// Runs `test` alone in a child process, relays its output, and returns its status and SKIP
/// reason.
fn run_in_child(program: &str, test: &Test, tap: &mut Tap<'_>) -> (Status, Option<String>) {
    let short = test.name.clone();
    let spawned = (|| {
        let (read_out, write_out) = rustix::pipe::pipe()?;
        let (read_err, write_err) = rustix::pipe::pipe()?;
        let child = start_child(program, test, write_out, write_err)?;
        Ok::<_, io::Error>((child, read_out, read_err))
    })();
    let (mut child, read_out, read_err) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            tap.msg(format!("ERROR SPAWNING TEST CHILD: {e}"));
            return (Status::Fail, None);
        }
    };

    // Lines arrive on threads so the timeout can fire while the child is silent.
    let (tx, rx) = mpsc::channel::<(Stream, Vec<u8>)>();
    let readers = [(Stream::Out, read_out), (Stream::Err, read_err)].map(|(stream, read)| {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut lines = BufReader::new(std::fs::File::from(read));
            let mut line = Vec::new();
            while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if tx.send((stream, std::mem::take(&mut line))).is_err() {
                    break;
                }
            }
        })
    });
    drop(tx);

    let deadline = Instant::now() + test.timeout;
    let mut reason = None;
    let mut relay_line = |tap: &mut Tap<'_>, (stream, line): (Stream, Vec<u8>)| {
        let text = String::from_utf8_lossy(&line);
        match (stream, text.strip_prefix(REASON_MARK)) {
            (Stream::Out, Some(r)) => reason = Some(unescape_reason(r)),
            (Stream::Out, None) => tap.relay_out(&line),
            (Stream::Err, _) => tap.relay_err(&line),
        }
    };
    // The child's pipes close when it exits (or when the last process it started does), so
    // the channel ends exactly then: no polling, and a quick test costs no idle wait.
    let timed_out = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => relay_line(tap, line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => break true,
        }
    };
    let status = match timed_out {
        true => {
            // The child may have exited while something it started still holds the pipes:
            // then its own status counts, as upstream waits for the child alone.
            let exited = child.try_wait();
            if let Some(pid) = child.pid() {
                let _ = kill_process_group(pid, Signal::KILL);
            }
            let _ = child.wait();
            // What was written before the kill.
            for line in rx.iter() {
                relay_line(tap, line);
            }
            exited
        }
        false => child.wait(),
    };
    for reader in readers {
        let _ = reader.join();
    }

    // kselftest_harness's __wait_for_test(), message for message, on its TH_LOG_STREAM.
    let (status, diagnosis) = match status {
        None => (Status::Fail, Some("Test terminated by timeout".to_owned())),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) if Status::from_code(code).is_ok() => (Status::from_code(code), None),
            (Some(_), _) => (Status::Fail, Some("Test failed".to_owned())),
            (None, Some(signal)) if signal == Signal::ABORT.as_raw() => {
                (Status::Fail, Some("Test terminated by assertion".to_owned()))
            }
            (None, Some(signal)) => (Status::Fail, Some(format!("Test terminated unexpectedly by signal {signal}"))),
            (None, None) => (Status::Fail, Some(format!("Test ended in some other way [{}]", status.into_raw()))),
        },
    };
    if let Some(diagnosis) = diagnosis {
        tap.err_line(format!("# {short}: {diagnosis}"));
    }
    (status, reason)
}

/// In a child started by the harness, runs the one test named by [`CHILD_ENV`] and returns the
/// exit code for it; `None` if this process is not such a child.
///
/// A failed check ends the child with `SIGABRT`, as upstream's `ASSERT_*` does, after the
/// fixture's teardown ran; a panic (a bug in the test) exits with `KSFT_FAIL`.
pub fn run_child(programs: &[Program]) -> Option<i32> {
    let wanted = std::env::var(CHILD_ENV).ok()?;
    let found = programs
        .iter()
        .flat_map(|p| p.tests.iter().map(move |t| (p, t)))
        .find(|(p, t)| child_key(&p.name, t) == wanted);
    let Some((_, test)) = found else {
        eprintln!("# no test named {wanted} in this run");
        return Some(KSFT_FAIL);
    };
    Some(run_test(test))
}

/// Runs `test` in this process, which is its child, and returns the exit code for it.
///
/// A failed check ends the child with `SIGABRT`, as upstream's `ASSERT_*` does, after the
/// fixture's teardown ran; a panic (a bug in the test) exits with `KSFT_FAIL`.
fn run_test(test: &Test) -> i32 {
    // The harness shows failures as one line; a panic is a bug, shown the same way.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("# panic: {info}");
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test.run_here()));
    let code = match outcome {
        Ok(Ok(())) => KSFT_PASS,
        Ok(Err(Verdict::Skip(reason))) => {
            eprintln!("#      SKIP      {reason}");
            println!("{REASON_MARK}{}", escape_reason(&reason));
            KSFT_SKIP
        }
        Ok(Err(Verdict::Fail(message))) => {
            for line in message.lines() {
                eprintln!("# {}: {line}", test.name);
            }
            let _ = std::io::stdout().flush();
            // No core file for an assertion: it is a verdict, not a crash.
            let _ = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: None });
            std::process::abort();
        }
        Err(_) => KSFT_FAIL,
    };
    let _ = std::io::stdout().flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_the_one_line_transport() {
        for reason in ["plain", "Device does not support reset\n", "a\\nb", "back\\", "two\nlines\n"] {
            let line = escape_reason(reason);
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(unescape_reason(&line), reason);
        }
    }

    #[test]
    fn list_table_matches_upstreams_layout() {
        let noop = || Ok(());
        let tests = vec![
            Test::new("fx", "a", "t1", noop),
            Test::new("fx", "a", "t2", noop),
            Test::new("fx", "b", "t1", noop),
            Test::new("fx", "b", "t2", noop),
            Test::new("fx", "c", "t1", noop),
            Test::new("plain", "", "only", noop),
        ];
        let mut err = Vec::new();
        list_tests(&Program::new("p", tests), &mut err);
        let expected = format!(
            "{:<20} {:<25} TEST\n{:<20} {:<25} t1\n{:<20} {:<25} t2\n{:<20} {:<25} \n{}\n{:<20} {:<25} only\n",
            "# FIXTURE",
            "VARIANT",
            "fx",
            "a",
            "",
            "b",
            "",
            "c",
            "-".repeat(80),
            "plain",
            ""
        );
        assert_eq!(String::from_utf8(err).unwrap(), expected);
    }
}
