//! Our harness against upstream's, byte for byte: the same tests written for
//! `kselftest_harness.h` (compiled from linux-source-7.3) and for `ksft`, run with the same
//! arguments, must print the same stdout and stderr and exit with the same code.
//!
//! One difference is by nature and is masked: a failed assertion's own message, which names
//! the source file, line and expression in each language's form.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ksft::{Case, Filter, Filters, Outcome, Program, ensure_eq, list_tests, run_child, run_programs, skip};

#[path = "../../../tests-support/kernel_source.rs"]
mod kernel_source;

/// Set in the re-executed test binary: it then behaves as the Rust twin of `demo.c`.
const RUST_SIDE: &str = "GOLDEN_RUST_SIDE";

fn pass(_: &mut ()) -> Outcome {
    println!("doing the work");
    Ok(())
}

fn skip_plain(_: &mut ()) -> Outcome {
    skip!("BAR too small (size=0x{:x})", 0x800)
}

fn skip_newline(_: &mut ()) -> Outcome {
    skip!("Device does not support reset\n")
}

fn fails(_: &mut ()) -> Outcome {
    ensure_eq!(1 + 1, 3);
    Ok(())
}

fn hangs(_: &mut ()) -> Outcome {
    std::thread::sleep(Duration::from_secs(30));
    Ok(())
}

fn alone(_: &mut ()) -> Outcome {
    Ok(())
}

fn demo() -> Program {
    // A TEST() belongs to the fixture "global", which kselftest_harness.h registers first.
    let mut tests = ksft::fixture("global", &[("", ())], |_| Ok(()), &[Case::new("alone", alone)]);
    tests.extend(ksft::fixture(
        "fx",
        &[("one", ()), ("two", ())],
        |_| Ok(()),
        &[
            Case::new("pass", pass),
            Case::new("skip_plain", skip_plain),
            Case::new("skip_newline", skip_newline),
            Case::new("fails", fails),
            Case::new("hangs", hangs).timeout(Duration::from_secs(1)),
        ],
    ));
    Program::new("demo", tests)
}

/// The Rust side: kselftest_harness's `main()` for the arguments we compare.
fn rust_main() -> i32 {
    let programs = [demo()];
    if let Some(code) = run_child(&programs) {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-l") {
        list_tests(&programs[0], &mut std::io::stderr());
        return ksft::KSFT_SKIP;
    }
    let filters = args
        .chunks(2)
        .map(|pair| match (pair[0].as_str(), pair[1].clone()) {
            ("-t", name) => Filter::Test(true, name),
            ("-T", name) => Filter::Test(false, name),
            ("-v", name) => Filter::Variant(true, name),
            ("-V", name) => Filter::Variant(false, name),
            ("-f", name) => Filter::Fixture(true, name),
            ("-F", name) => Filter::Fixture(false, name),
            (_, name) => Filter::Run(name),
        })
        .collect();
    run_programs("vfio", &programs, &Filters(filters), &mut std::io::stdout(), &mut std::io::stderr())
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("the demo runs");
    let mask = |text: Vec<u8>| {
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| if l.contains("1 + 1") { "# <the assertion's message>" } else { l })
            .fold(String::new(), |acc, l| acc + l + "\n")
    };
    Output { code: out.status.code().unwrap_or(-1), stdout: mask(out.stdout), stderr: mask(out.stderr) }
}

fn compile_c(src: &Path) -> PathBuf {
    let selftests = src.join("tools/testing/selftests");
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ksft-golden-demo");
    let status = Command::new("cc")
        .args(["-O0", "-D_GNU_SOURCE", "-I"])
        .arg(&selftests)
        .arg("-o")
        .arg(&exe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo.c"))
        .status()
        .expect("cc runs");
    assert!(status.success(), "demo.c compiles against {}", selftests.display());
    exe
}

#[path = "../../../tests-support/trial.rs"]
mod trial;
use trial::Completion;

fn main() {
    if std::env::var_os(RUST_SIDE).is_some() {
        std::process::exit(rust_main());
    }
    trial::main(vec![trial::check_if(
        "prints_what_kselftest_harness_h_prints",
        prints_what_kselftest_harness_h_prints,
    )]);
}

fn prints_what_kselftest_harness_h_prints() -> Completion {
    let Some(src) = kernel_source::kernel_source() else {
        return Completion::ignored_with(
            "no unpacked linux-source-7.3 (run `vfiotest vm --prepare` or set VFIOTEST_KERNEL_SRC)",
        );
    };
    let c_demo = compile_c(&src);
    let cases: [(&[&str], Option<&str>); 5] = [
        (&[], None),
        (&["-l"], None),
        (&["-r", "fx.two.skip_newline", "-r", "global.alone"], None),
        (&["-T", "hangs", "-v", "one"], Some("1")),
        (&["-F", "fx"], None),
    ];
    for (args, tap_level) in cases {
        let command = |program: &Path| {
            let mut command = Command::new(program);
            command.args(args).env_remove("KSFT_TAP_LEVEL").env_remove(ksft::CHILD_ENV);
            if let Some(level) = tap_level {
                command.env("KSFT_TAP_LEVEL", level);
            }
            command
        };
        let c = run(&mut command(&c_demo));
        let rust = run(command(&std::env::current_exe().unwrap()).env(RUST_SIDE, "1"));
        let case = format!("args {args:?}, KSFT_TAP_LEVEL={tap_level:?}");
        assert_eq!(rust.stdout, c.stdout, "stdout differs ({case})");
        assert_eq!(rust.stderr, c.stderr, "stderr differs ({case})");
        assert_eq!(rust.code, c.code, "exit code differs ({case})");
    }
    println!("golden: {} cases print what kselftest_harness.h prints, byte for byte", cases.len());
    Completion::Completed
}
