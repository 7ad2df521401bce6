//! Running tests: one child process per test, kselftest_harness's output and exit codes.

use std::any::Any;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::tap::relay;
use crate::{CHILD_ENV, Filters, KSFT_FAIL, KSFT_PASS, KSFT_SKIP, KSFT_XFAIL, KSFT_XPASS, Tap, Test, Verdict};

/// Marks the child's last line, which carries the SKIP reason back to the harness.
const REASON_MARK: &str = "\u{1f}ksft-reason:";

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

/// Prints a refusal into a program's output, as the kselftest runner shows what the program
/// wrote (stdout and stderr alike), and returns the program's exit code.
fn refuse(refusal: &Refusal, output: &mut Tap<'_>) -> i32 {
    match refusal {
        Refusal::Skip(reason) => {
            output.line(reason);
            KSFT_SKIP
        }
        Refusal::ExitSkip(reason) => {
            output.line(format!("1..0 # SKIP {reason}"));
            KSFT_SKIP
        }
        Refusal::Fail(message) => {
            output.line(message);
            KSFT_FAIL
        }
    }
}

/// Counts, as in kselftest's `# Totals` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    fn add(&mut self, code: i32) {
        match code {
            KSFT_PASS => self.pass += 1,
            KSFT_SKIP => self.skip += 1,
            KSFT_XFAIL => self.xfail += 1,
            KSFT_XPASS => self.xpass += 1,
            _ => self.fail += 1,
        }
    }

    fn tests(&self) -> u32 {
        self.pass + self.fail + self.xfail + self.xpass + self.skip
    }

    /// The kselftest exit code for a run with these counts.
    pub fn exit_code(&self) -> i32 {
        if self.fail > 0 { KSFT_FAIL } else { KSFT_PASS }
    }
}

/// Runs the enabled tests of every program and returns the kselftest exit code.
///
/// One program prints exactly what its C counterpart prints. Several print as the kselftest
/// runner does: an outer plan with one result per program, each program's TAP indented by `# `.
pub fn run_programs(programs: &[Program], filters: &Filters, out: &mut dyn Write) -> i32 {
    let mut tap = Tap::new(out);
    if let [program] = programs {
        return match program.run_prologue(&mut tap) {
            // Alone, a program's stderr is the terminal's, not TAP.
            Err(Refusal::Skip(reason)) => {
                eprintln!("{reason}");
                KSFT_SKIP
            }
            Err(Refusal::Fail(message)) => {
                eprintln!("{message}");
                KSFT_FAIL
            }
            Err(refusal) => refuse(&refusal, &mut tap),
            Ok(_teardown) => run_program(program, filters, &mut tap).exit_code(),
        };
    }
    tap.line("TAP version 13");
    tap.line(format!("1..{}", programs.len()));
    let mut failed = false;
    for (number, program) in programs.iter().enumerate() {
        tap.msg(format!("selftests: vfio: {}", program.name));
        let teardown = match program.run_prologue(&mut tap.nested()) {
            Ok(teardown) => teardown,
            Err(refusal) => {
                let line = match refuse(&refusal, &mut tap.nested()) {
                    KSFT_SKIP => format!("ok {} selftests: vfio: {} # SKIP", number + 1, program.name),
                    code => format!("not ok {} selftests: vfio: {} # exit={code}", number + 1, program.name),
                };
                failed |= matches!(refusal, Refusal::Fail(_));
                tap.line(line);
                continue;
            }
        };
        let summary = run_program(program, filters, &mut tap.nested());
        drop(teardown);
        // A program whose tests all skipped still exits 0, and the kselftest runner marks only
        // exit code 4 as SKIP.
        let line = match summary.exit_code() {
            KSFT_FAIL => format!("not ok {} selftests: vfio: {} # exit={KSFT_FAIL}", number + 1, program.name),
            _ => format!("ok {} selftests: vfio: {}", number + 1, program.name),
        };
        failed |= summary.exit_code() == KSFT_FAIL;
        tap.line(line);
    }
    if failed { KSFT_FAIL } else { KSFT_PASS }
}

fn run_program(program: &Program, filters: &Filters, tap: &mut Tap<'_>) -> Summary {
    let enabled: Vec<&Test> = program.tests.iter().filter(|t| filters.enabled(t)).collect();
    let cases: BTreeSet<(&str, &str)> = enabled.iter().map(|t| (t.fixture.as_str(), t.variant.as_str())).collect();
    tap.line("TAP version 13");
    tap.line(format!("1..{}", enabled.len()));
    tap.msg(format!("Starting {} tests from {} test cases.", enabled.len(), cases.len()));
    let mut summary = Summary::default();
    for (number, test) in enabled.iter().enumerate() {
        let name = test.full_name();
        tap.msg(format!(" RUN           {name} ..."));
        let (code, reason) = run_in_child(&program.name, test, tap);
        let passed = matches!(code, KSFT_PASS | KSFT_SKIP | KSFT_XFAIL | KSFT_XPASS);
        tap.msg(format!("         {:>4}  {name}", if passed { "OK" } else { "FAIL" }));
        summary.add(code);
        let number = number + 1;
        tap.line(match code {
            KSFT_PASS => format!("ok {number} {name}"),
            KSFT_SKIP => format!("ok {number} {name} # SKIP {}", reason.as_deref().unwrap_or("unknown")),
            KSFT_XFAIL => format!("ok {number} {name} # XFAIL {}", reason.as_deref().unwrap_or("unknown")),
            KSFT_XPASS => format!("ok {number} {name} # XPASS {}", reason.as_deref().unwrap_or("unknown")),
            _ => match &reason {
                Some(r) => format!("not ok {number} {name} #  {r}"),
                None => format!("not ok {number} {name}"),
            },
        });
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

/// Re-runs this executable with the same arguments to run `test` alone, relays its output,
/// and returns its kselftest code and SKIP reason.
fn run_in_child(program: &str, test: &Test, tap: &mut Tap<'_>) -> (i32, Option<String>) {
    let short = test.name.clone();
    let spawned = (|| {
        let (read, write) = rustix::pipe::pipe()?;
        let write_err = write.try_clone()?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(CHILD_ENV, child_key(program, test))
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write_err))
            // Its own process group, so a timeout kills everything it started.
            .process_group(0)
            .spawn()?;
        Ok::<_, std::io::Error>((child, read))
    })();
    let (mut child, read) = match spawned {
        Ok(pair) => pair,
        Err(e) => {
            tap.msg(format!("ERROR SPAWNING TEST CHILD: {e}"));
            return (KSFT_FAIL, None);
        }
    };

    // Lines arrive on a thread so the timeout can fire while the child is silent.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = thread::spawn(move || {
        let mut lines = BufReader::new(std::fs::File::from(read));
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + test.timeout;
    let mut reason = None;
    let mut relay_line = |tap: &mut Tap<'_>, line: Vec<u8>| {
        let text = String::from_utf8_lossy(&line);
        match text.strip_prefix(REASON_MARK) {
            Some(r) => reason = Some(r.to_owned()),
            None => {
                let _ = relay(tap, &line);
            }
        }
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => relay_line(tap, line),
            Err(mpsc::RecvTimeoutError::Disconnected) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            if let Some(pid) = Pid::from_raw(child.id() as i32) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
            let _ = child.wait();
            break None;
        }
    };
    // The child is gone; drain what it wrote last. A grandchild still holding the pipe was
    // killed with the group on timeout, and otherwise ends with its parent's exit.
    for line in rx.iter() {
        relay_line(tap, line);
    }
    let _ = reader.join();

    let code = match status {
        None => {
            tap.msg(format!("{short}: Test terminated by timeout"));
            KSFT_FAIL
        }
        Some(status) => match (status.code(), status.signal()) {
            (Some(code @ (KSFT_PASS | KSFT_SKIP | KSFT_XFAIL | KSFT_XPASS)), _) => code,
            (Some(_), _) => {
                tap.msg(format!("{short}: Test failed"));
                KSFT_FAIL
            }
            (None, Some(signal)) => {
                tap.msg(format!("{short}: Test terminated unexpectedly by signal {signal}"));
                KSFT_FAIL
            }
            (None, None) => {
                tap.msg(format!("{short}: Test ended in some other way [{}]", status.into_raw()));
                KSFT_FAIL
            }
        },
    };
    (code, reason)
}

/// In a child started by the harness, runs the one test named by [`CHILD_ENV`] and returns the
/// exit code for it; `None` if this process is not such a child.
pub fn run_child(programs: &[Program]) -> Option<i32> {
    let wanted = std::env::var(CHILD_ENV).ok()?;
    // The harness shows failures as one line; a panic is a bug, shown the same way.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("# panic: {info}");
    }));
    let found = programs
        .iter()
        .flat_map(|p| p.tests.iter().map(move |t| (p, t)))
        .find(|(p, t)| child_key(&p.name, t) == wanted);
    let Some((_, test)) = found else {
        eprintln!("# no test named {wanted} in this run");
        return Some(KSFT_FAIL);
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test.run_here()));
    let code = match outcome {
        Ok(Ok(())) => KSFT_PASS,
        Ok(Err(Verdict::Skip(reason))) => {
            eprintln!("#      SKIP      {reason}");
            println!("{REASON_MARK}{reason}");
            KSFT_SKIP
        }
        Ok(Err(Verdict::Fail(message))) => {
            for line in message.lines() {
                eprintln!("# {}: {line}", test.name);
            }
            KSFT_FAIL
        }
        Err(_) => KSFT_FAIL,
    };
    let _ = std::io::stdout().flush();
    Some(code)
}
