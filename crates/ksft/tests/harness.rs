//! The harness end to end: real child processes, real timeouts, kselftest's exact output.
//!
//! The harness re-runs the current executable to run one test; here that is this test binary,
//! which lands in `main` again and answers as the child.

use std::time::Duration;

use ksft::{Filter, Filters, Outcome, Program, Test, Verdict, ensure, run_child, run_programs, skip};

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
    vec![
        Program { name: "demo".into(), tests, skip: None },
        Program { name: "demo 2".into(), tests: other, skip: None },
    ]
}

fn main() {
    let programs = catalogue();
    if let Some(code) = run_child(&programs) {
        std::process::exit(code);
    }

    let mut out = Vec::new();
    let code = run_programs(&programs[..1], &Filters::default(), &mut out);
    let out = String::from_utf8(out).unwrap();
    let expected = "\
TAP version 13
1..5
# Starting 5 tests from 3 test cases.
#  RUN           fx.one.pass ...
doing the work
#            OK  fx.one.pass
ok 1 fx.one.pass
#  RUN           fx.one.skips ...
#      SKIP      BAR too small (size=0x800)
#            OK  fx.one.skips
ok 2 fx.one.skips # SKIP BAR too small (size=0x800)
#  RUN           fx.two.fails ...
# fails: crates/ksft/tests/harness.rs:20: arithmetic is broken
# fails: Test failed
#          FAIL  fx.two.fails
not ok 3 fx.two.fails
#  RUN           fx.two.hangs ...
# hangs: Test terminated by timeout
#          FAIL  fx.two.hangs
not ok 4 fx.two.hangs
#  RUN           other.panics ...
";
    assert!(out.starts_with(expected), "got:\n{out}");
    let tail = "\
#          FAIL  other.panics
not ok 5 other.panics
# FAILED: 2 / 5 tests passed.
# 1 skipped test(s) detected. Consider enabling relevant config options to improve coverage.
# Totals: pass:1 fail:3 xfail:0 xpass:0 skip:1 error:0
";
    assert!(out.ends_with(tail), "got:\n{out}");
    assert!(out.contains("# panic: "), "a panic is reported in one line:\n{out}");
    assert_eq!(code, 1);

    // Two programs nest as the kselftest runner does, each child running its own program's test.
    let mut out = Vec::new();
    let filters = Filters(vec![Filter::Run("fx.one.pass".into())]);
    assert_eq!(run_programs(&programs, &filters, &mut out), 0);
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
ok 2 selftests: vfio: demo 2 # SKIP
";
    assert_eq!(out, nested);

    // A program that can't serve the device skips whole, as upstream's exit 4 before any TAP.
    let unfit = |name: &str| Program {
        name: name.into(),
        tests: catalogue()[0].tests.clone(),
        skip: Some("No driver found for device".into()),
    };
    let mut out = Vec::new();
    assert_eq!(run_programs(&[unfit("demo")], &Filters::default(), &mut out), 4);
    assert!(out.is_empty(), "no TAP from a program that can't run");
    let mut out = Vec::new();
    assert_eq!(run_programs(&[unfit("a"), unfit("b")], &Filters::default(), &mut out), 0);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("# selftests: vfio: a\n# No driver found for device\nok 1 selftests: vfio: a # SKIP\n"),
        "got:\n{out}"
    );

    // Filters pick tests, and an all-pass run exits 0.
    let mut out = Vec::new();
    let filters = Filters(vec![Filter::Test(true, "pass".into()), Filter::Test(true, "skips".into())]);
    assert_eq!(run_programs(&programs[..1], &filters, &mut out), 0);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("1..2\n") && out.contains("# PASSED: 2 / 2 tests passed.\n"), "got:\n{out}");
    println!("harness: kselftest output, exit codes, timeout and filters all match");
}
