//! The harness end to end: real child processes, real timeouts, kselftest's exact output.
//!
//! The harness re-runs the current executable to run one test; here that is this test binary,
//! which lands in `main` again and answers as the child.

use std::time::Duration;

use ksft::{Filter, Filters, Outcome, Program, Refusal, Test, Verdict, ensure, run_child, run_programs, skip};

fn pass() -> Outcome {
    println!("doing the work");
    Ok(())
}

fn skips() -> Outcome {
    skip!("BAR too small (size=0x800)")
}

fn fails() -> Outcome {
    ensure!(1 + 1 == 3, "arithmetic is {}", "broken");
    Ok(())
}

fn hangs() -> Outcome {
    std::thread::sleep(Duration::from_secs(30));
    Ok(())
}

fn panics() -> Outcome {
    let v: Vec<u32> = Vec::new();
    let _ = v[1];
    Err(Verdict::Fail("unreachable".into()))
}

fn catalogue() -> Vec<Program> {
    let tests = vec![
        Test::new("fx", "one", "pass", pass),
        Test::new("fx", "one", "skips", skips),
        Test::new("fx", "two", "fails", fails),
        Test::new("fx", "two", "hangs", hangs).with_timeout(Duration::from_secs(1)),
        Test::new("other", "", "panics", panics),
    ];
    // A second program with the same test names, as when one program runs on two devices:
    // the child must run the test of the right one.
    let other = vec![Test::new("fx", "one", "pass", || skip!("the other program's test"))];
    // Says how its child was started: forked, or this executable re-run.
    let how = vec![Test::new("child", "", "how", || {
        println!("re-run: {}", std::env::var_os(ksft::CHILD_ENV).is_some());
        Ok(())
    })];
    vec![Program::new("demo", tests), Program::new("demo 2", other), Program::new("how", how)]
}

#[path = "../../../tests-support/trial.rs"]
mod trial;

fn main() {
    let programs = catalogue();
    if let Some(code) = run_child(&programs) {
        std::process::exit(code);
    }
    let threaded = programs.clone();
    trial::main(vec![
        trial::check("runs_programs_as_kselftest_does", move || runs_programs_as_kselftest_does(programs)),
        trial::check("a_harness_with_threads_re_runs_itself_to_the_same_verdicts", move || {
            a_harness_with_threads_re_runs_itself_to_the_same_verdicts(threaded)
        }),
    ]);
}

/// What the child of `how` printed.
fn how_the_child_started(programs: &[Program]) -> String {
    let mut out = Vec::new();
    run_programs("vfio", &programs[2..], &Filters::default(), &mut out, &mut Vec::new());
    let out = String::from_utf8(out).unwrap();
    out.lines().find(|l| l.starts_with("re-run: ")).unwrap_or_else(|| panic!("no answer:\n{out}")).to_owned()
}

/// Only a single-threaded harness may fork; with another thread alive the child is this
/// executable again, and every verdict, timeout and diagnostic is the same.
fn a_harness_with_threads_re_runs_itself_to_the_same_verdicts(programs: Vec<Program>) {
    assert_eq!(how_the_child_started(&programs), "re-run: false", "alone, the harness forks");
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || parked.recv());
    assert_eq!(how_the_child_started(&programs), "re-run: true", "with a thread, it re-runs itself");
    single_program_output_is_upstreams(&programs);
    drop(stop);
    let _ = other.join();
}

fn runs_programs_as_kselftest_does(programs: Vec<Program>) {
    single_program_output_is_upstreams(&programs);
    more_programs_and_prologues_are_as_upstreams(&programs);
}

/// Alone, a program keeps TAP on stdout and diagnostics on stderr, as a C selftest does.
fn single_program_output_is_upstreams(programs: &[Program]) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_programs("vfio", &programs[..1], &Filters::default(), &mut out, &mut err);
    let (out, err) = (String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap());
    let expected = "\
TAP version 13
1..5
# Starting 5 tests from 3 test cases.
#  RUN           fx.one.pass ...
doing the work
#            OK  fx.one.pass
ok 1 fx.one.pass
#  RUN           fx.one.skips ...
#            OK  fx.one.skips
ok 2 fx.one.skips # SKIP BAR too small (size=0x800)
#  RUN           fx.two.fails ...
#          FAIL  fx.two.fails
not ok 3 fx.two.fails
#  RUN           fx.two.hangs ...
#          FAIL  fx.two.hangs
not ok 4 fx.two.hangs
#  RUN           other.panics ...
#          FAIL  other.panics
not ok 5 other.panics
# FAILED: 2 / 5 tests passed.
# 1 skipped test(s) detected. Consider enabling relevant config options to improve coverage.
# Totals: pass:1 fail:3 xfail:0 xpass:0 skip:1 error:0
";
    assert_eq!(out, expected);
    let diagnostics = "\
#      SKIP      BAR too small (size=0x800)
# fails: crates/ksft/tests/harness.rs:20: arithmetic is broken
# fails: Test terminated by assertion
# hangs: Test terminated by timeout
";
    assert!(err.starts_with(diagnostics), "got:\n{err}");
    assert!(err.contains("# panic: ") && err.ends_with("# panics: Test failed\n"), "a panic is one line:\n{err}");
    assert_eq!(code, 1);
}

fn more_programs_and_prologues_are_as_upstreams(programs: &[Program]) {
    // Two programs nest as the kselftest runner does, each child running its own program's test.
    let mut out = Vec::new();
    let filters = Filters(vec![Filter::Run("fx.one.pass".into())]);
    assert_eq!(run_programs("vfio", &programs[..2], &filters, &mut out, &mut Vec::new()), 0);
    let out = String::from_utf8(out).unwrap();
    let nested = "\
TAP version 13
1..2
# selftests: vfio: demo
# TAP version 13
# 1..1
# # Starting 1 tests from 1 test cases.
# #  RUN           fx.one.pass ...
# doing the work
# #            OK  fx.one.pass
# ok 1 fx.one.pass
# # PASSED: 1 / 1 tests passed.
# # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0
ok 1 selftests: vfio: demo
# selftests: vfio: demo 2
# TAP version 13
# 1..1
# # Starting 1 tests from 1 test cases.
# #  RUN           fx.one.pass ...
# #      SKIP      the other program's test
# #            OK  fx.one.pass
# ok 1 fx.one.pass # SKIP the other program's test
# # PASSED: 1 / 1 tests passed.
# # 1 skipped test(s) detected. Consider enabling relevant config options to improve coverage.
# # Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0
ok 2 selftests: vfio: demo 2
";
    assert_eq!(out, nested);

    // A program that can't serve the device skips whole, as upstream's exit 4 before any TAP.
    let unfit = |name: &str| {
        Program::new(name, catalogue()[0].tests.clone())
            .with_prologue(|_| Err(Refusal::Skip("No driver found for device".into())))
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run_programs("vfio", &[unfit("demo")], &Filters::default(), &mut out, &mut err), 4);
    assert!(out.is_empty(), "no TAP from a program that can't run");
    assert_eq!(err, b"No driver found for device\n");
    let mut out = Vec::new();
    assert_eq!(run_programs("vfio", &[unfit("a"), unfit("b")], &Filters::default(), &mut out, &mut Vec::new()), 0);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("# selftests: vfio: a\n# No driver found for device\nok 1 selftests: vfio: a # SKIP\n"),
        "got:\n{out}"
    );

    // ksft_exit_skip() before the plan, alone and nested.
    let exit_skip = |name: &str| {
        Program::new(name, catalogue()[0].tests.clone())
            .with_prologue(|_| Err(Refusal::ExitSkip("SR-IOV may not be supported by the PF: 0000:00:03.0".into())))
    };
    let mut out = Vec::new();
    assert_eq!(run_programs("vfio", &[exit_skip("demo")], &Filters::default(), &mut out, &mut Vec::new()), 4);
    assert_eq!(String::from_utf8(out).unwrap(), "1..0 # SKIP SR-IOV may not be supported by the PF: 0000:00:03.0\n");
    let mut out = Vec::new();
    assert_eq!(run_programs("vfio", &[exit_skip("a"), unfit("b")], &Filters::default(), &mut out, &mut Vec::new()), 0);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("# selftests: vfio: a\n# 1..0 # SKIP SR-IOV may not be supported by the PF: 0000:00:03.0\nok 1 selftests: vfio: a # SKIP\n"),
        "got:\n{out}"
    );

    // A prologue that fails fails the program; its teardown runs after the last test.
    let broken = Program::new("broken", Vec::new()).with_prologue(|_| Err(Refusal::Fail("VF not on vfio-pci".into())));
    let mut out = Vec::new();
    assert_eq!(
        run_programs("vfio", &[broken.clone(), exit_skip("b")], &Filters::default(), &mut out, &mut Vec::new()),
        1
    );
    assert!(
        String::from_utf8(out).unwrap().contains("# VF not on vfio-pci\nnot ok 1 selftests: vfio: broken # exit=1\n")
    );
    let torn_down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    struct Teardown(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Teardown {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let flag = std::sync::Arc::clone(&torn_down);
    let with_teardown = Program::new("demo", catalogue()[0].tests.clone())
        .with_prologue(move |_| Ok(Some(Box::new(Teardown(std::sync::Arc::clone(&flag))) as Box<dyn std::any::Any>)));
    let filters = Filters(vec![Filter::Test(true, "pass".into())]);
    assert_eq!(run_programs("vfio", &[with_teardown], &filters, &mut Vec::new(), &mut Vec::new()), 0);
    assert!(torn_down.load(std::sync::atomic::Ordering::SeqCst), "the prologue's teardown ran");

    // Filters pick tests, and an all-pass run exits 0.
    let mut out = Vec::new();
    let filters = Filters(vec![Filter::Test(true, "pass".into()), Filter::Test(true, "skips".into())]);
    assert_eq!(run_programs("vfio", &programs[..1], &filters, &mut out, &mut Vec::new()), 0);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("1..2\n") && out.contains("# PASSED: 2 / 2 tests passed.\n"), "got:\n{out}");
    println!("harness: kselftest output, exit codes, timeout and filters all match");
}
