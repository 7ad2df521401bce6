//! Writing and reading TAP 13 as kselftest prints it.

use std::io::{self, Write};

use crate::Status;

/// A TAP writer. Nested documents (a program inside a multi-program run) are written with a
/// `"# "` prefix, as the kselftest runner does.
///
/// A program's stderr is kept apart from its TAP when it runs alone, as a C selftest's is; a
/// nested program's is merged into the TAP, as the kselftest runner does with `2>&1`.
pub struct Tap<'a> {
    out: &'a mut dyn Write,
    /// Where stderr goes; `None` merges it into `out`.
    err: Option<&'a mut dyn Write>,
    prefix: String,
}

impl<'a> Tap<'a> {
    /// A top-level writer with stderr merged into it.
    pub fn new(out: &'a mut dyn Write) -> Self {
        Self { out, err: None, prefix: String::new() }
    }

    /// A top-level writer with stderr apart.
    pub fn with_stderr(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Self { out, err: Some(err), prefix: String::new() }
    }

    /// A writer for a nested document, indented one level, stderr merged.
    pub fn nested<'b>(&'b mut self) -> Tap<'b> {
        let prefix = format!("{}# ", self.prefix);
        Tap { out: &mut *self.out, err: None, prefix }
    }

    /// Writes text on stdout: each of its lines gets the prefix and a newline, and a trailing
    /// newline in `text` leaves an empty line, as `printf("...%s\n", reason)` does with a
    /// reason that ends in one. Flushes, so a console shows it at once.
    pub fn line(&mut self, text: impl AsRef<str>) {
        write_lines(&mut *self.out, &self.prefix, text.as_ref().as_bytes());
    }

    /// `# message` on stdout, kselftest's `ksft_print_msg`.
    pub fn msg(&mut self, text: impl AsRef<str>) {
        self.line(format!("# {}", text.as_ref()));
    }

    /// Writes text on stderr (the harness's `TH_LOG_STREAM`), or merged into stdout.
    pub fn err_line(&mut self, text: impl AsRef<str>) {
        self.relay_err(text.as_ref().as_bytes());
    }

    /// Relays a line a child wrote on stdout.
    pub(crate) fn relay_out(&mut self, line: &[u8]) {
        write_lines(&mut *self.out, &self.prefix, line);
    }

    /// Relays a line a child wrote on stderr.
    pub(crate) fn relay_err(&mut self, line: &[u8]) {
        match &mut self.err {
            Some(err) => write_lines(&mut **err, "", line),
            None => write_lines(&mut *self.out, &self.prefix, line),
        }
    }
}

fn write_lines(out: &mut dyn Write, prefix: &str, text: &[u8]) {
    // Output errors (a closed pipe) can't be reported anywhere better; ignore them.
    let mut write = || -> io::Result<()> {
        for line in text.split(|&b| b == b'\n') {
            out.write_all(prefix.as_bytes())?;
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    let _ = write();
}

/// One parsed top-level TAP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapLine {
    /// `TAP version 13`
    Version,
    /// `1..N`
    Plan(u32),
    /// `ok N name`, `ok N name # SKIP reason`, `not ok N name`, ...
    Result {
        /// What `ok`/`not ok` and the directive (`SKIP`, `XFAIL`, `XPASS`) say.
        status: Status,
        /// The test number.
        number: u32,
        /// The test name.
        name: String,
        /// The text after the directive or after `#  `.
        reason: String,
    },
    /// `# Totals: pass:P fail:F xfail:X xpass:Y skip:S error:E`
    Totals {
        /// Passed.
        pass: u32,
        /// Failed.
        fail: u32,
        /// Skipped.
        skip: u32,
    },
    /// Any other `#` line.
    Comment(String),
}

/// The runner's header for a program of a collection: `selftests: <collection>: <program>`.
pub fn program_header(collection: &str, program: &str) -> String {
    format!("selftests: {collection}: {program}")
}

/// The program a header or a program's result names, if `text` is one for `collection`.
pub fn program_named<'a>(collection: &str, text: &'a str) -> Option<&'a str> {
    text.strip_prefix("selftests: ")?.strip_prefix(collection)?.strip_prefix(": ")
}

/// How the kselftest runner reports a whole program by its exit code: `ok N selftests: C: P`,
/// `ok N ... # SKIP` for exit 4, `not ok N ... # exit=CODE` for anything else but 0.
pub fn program_result_line(number: usize, collection: &str, program: &str, code: i32) -> String {
    let name = program_header(collection, program);
    match code {
        crate::KSFT_PASS => format!("ok {number} {name}"),
        crate::KSFT_SKIP => format!("ok {number} {name} # SKIP"),
        code => format!("not ok {number} {name} # exit={code}"),
    }
}

/// The exit code a program's result line stands for (the inverse of [`program_result_line`]).
pub fn program_exit_code(status: Status, reason: &str) -> i32 {
    match status {
        Status::Skip => crate::KSFT_SKIP,
        Status::Fail => reason.strip_prefix("exit=").and_then(|c| c.trim().parse().ok()).unwrap_or(crate::KSFT_FAIL),
        _ => crate::KSFT_PASS,
    }
}

/// What the harness prints, after `# `, as a test starts.
pub fn run_marker(test: &str) -> String {
    format!(" RUN           {test} ...")
}

/// The test a comment (the text after `# `, nested ones included) says is starting.
pub fn running(comment: &str) -> Option<&str> {
    comment.trim_start_matches(['#', ' ']).strip_prefix("RUN")?.trim_start().strip_suffix(" ...")
}

/// A test's result line, as kselftest.h's `ksft_test_result_code()` writes it: a directive
/// takes a reason (`unknown` if the test gave none); without one, a reason follows `#  `.
pub fn result_line(number: usize, name: &str, status: Status, reason: Option<&str>) -> String {
    let ok = if status.is_ok() { "ok" } else { "not ok" };
    let tail = match (status.directive(), reason) {
        (Some(directive), reason) => format!(" # {directive} {}", reason.unwrap_or("unknown")),
        (None, Some(reason)) => format!(" #  {reason}"),
        (None, None) => String::new(),
    };
    format!("{ok} {number} {name}{tail}")
}

/// Parses one line of a TAP stream; `None` for lines that aren't TAP at all.
pub fn parse_line(line: &str) -> Option<TapLine> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line == "TAP version 13" {
        return Some(TapLine::Version);
    }
    if let Some(n) = line.strip_prefix("1..") {
        return n.parse().ok().map(TapLine::Plan);
    }
    if let Some(rest) = line.strip_prefix("# Totals: ") {
        let field = |key: &str| -> Option<u32> {
            rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix(':')?.parse().ok())
        };
        return Some(TapLine::Totals { pass: field("pass")?, fail: field("fail")?, skip: field("skip")? });
    }
    if let Some(comment) = line.strip_prefix('#') {
        return Some(TapLine::Comment(comment.trim_start().to_owned()));
    }
    let (ok, rest) =
        if let Some(rest) = line.strip_prefix("ok ") { (true, rest) } else { (false, line.strip_prefix("not ok ")?) };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = number.parse().ok()?;
    let (name, directive, reason) = match rest.split_once(" # ") {
        None => (rest.to_owned(), None, String::new()),
        Some((name, tail)) => {
            let word = tail.split_whitespace().next().unwrap_or("");
            match Status::ALL.iter().find(|s| s.directive() == Some(word)) {
                Some(_) => (name.to_owned(), Some(word), tail[word.len()..].trim().to_owned()),
                None => (name.to_owned(), None, tail.trim().to_owned()),
            }
        }
    };
    Some(TapLine::Result { status: Status::from_tap(ok, directive), number, name, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kselftest_lines() {
        assert_eq!(parse_line("TAP version 13"), Some(TapLine::Version));
        assert_eq!(parse_line("1..15\n"), Some(TapLine::Plan(15)));
        assert_eq!(
            parse_line("ok 2 f.v.t # SKIP BAR too small (size=0x800)"),
            Some(TapLine::Result {
                status: Status::Skip,
                number: 2,
                name: "f.v.t".into(),
                reason: "BAR too small (size=0x800)".into()
            })
        );
        assert_eq!(
            parse_line("not ok 3 f.v.t"),
            Some(TapLine::Result { status: Status::Fail, number: 3, name: "f.v.t".into(), reason: String::new() })
        );
        assert_eq!(
            parse_line("# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0"),
            Some(TapLine::Totals { pass: 1, fail: 1, skip: 1 })
        );
        assert_eq!(parse_line("#  RUN           f.v.t ..."), Some(TapLine::Comment("RUN           f.v.t ...".into())));
        assert_eq!(parse_line("[    1.234] random kernel line"), None);
        assert_eq!(parse_line("ok x"), None);
    }

    #[test]
    fn nested_writer_prefixes_lines() {
        let mut buf = Vec::new();
        let mut tap = Tap::new(&mut buf);
        tap.line("TAP version 13");
        tap.nested().line("1..3");
        tap.nested().msg("hello");
        assert_eq!(String::from_utf8(buf).unwrap(), "TAP version 13\n# 1..3\n# # hello\n");
    }

    #[test]
    fn a_trailing_newline_leaves_an_empty_line_prefixed_when_nested() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut tap = Tap::with_stderr(&mut out, &mut err);
        tap.line("ok 1 t # SKIP no reset\n");
        tap.err_line("# t: Test terminated by assertion");
        tap.nested().line("ok 1 t # SKIP no reset\n");
        tap.nested().err_line("# merged");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok 1 t # SKIP no reset\n\n# ok 1 t # SKIP no reset\n# \n# # merged\n"
        );
        assert_eq!(String::from_utf8(err).unwrap(), "# t: Test terminated by assertion\n");
    }

    #[test]
    fn every_status_round_trips_through_tap() {
        for (line, status) in [
            ("ok 1 t", Status::Pass),
            ("not ok 1 t", Status::Fail),
            ("ok 1 t # SKIP why", Status::Skip),
            ("ok 1 t # XFAIL why", Status::XFail),
            ("ok 1 t # XPASS why", Status::XPass),
            ("not ok 1 t # SKIP a failure stays a failure", Status::Fail),
        ] {
            let Some(TapLine::Result { status: parsed, .. }) = parse_line(line) else { panic!("{line}") };
            assert_eq!(parsed, status, "{line}");
            assert_eq!(Status::from_code(status.code()), status);
            assert_eq!(status.name().parse::<Status>(), Ok(status));
        }
        assert_eq!(Status::from_code(101), Status::Fail, "any other exit code is a failure");
    }

    /// Every result line the harness writes parses back to what it said: status, number, name
    /// and reason, with and without a reason.
    #[test]
    fn every_result_line_round_trips_through_the_parser() {
        for status in Status::ALL {
            for reason in [None, Some("BAR too small (size=0x800)")] {
                let line = result_line(7, "fixture.variant.test", status, reason);
                let Some(TapLine::Result { status: s, number, name, reason: r }) = parse_line(&line) else {
                    panic!("{line:?} is no result line")
                };
                assert_eq!((s, number, name.as_str()), (status, 7, "fixture.variant.test"), "{line:?}");
                let want = match (status.directive(), reason) {
                    (Some(_), None) => "unknown",
                    (_, reason) => reason.unwrap_or(""),
                };
                assert_eq!(r, want, "{line:?}");
            }
        }
    }

    #[test]
    fn one_tally_counts_as_kselftest_does() {
        let tally: crate::Summary = Status::ALL.into_iter().chain([Status::Pass]).collect();
        assert_eq!((tally.pass, tally.fail, tally.skip, tally.xfail, tally.xpass), (2, 1, 1, 1, 1));
        assert_eq!(tally.tests(), 6);
        assert_eq!(tally.exit_code(), crate::KSFT_FAIL);
        let no_failure: crate::Summary =
            [Status::Pass, Status::XPass, Status::XFail, Status::Skip].into_iter().collect();
        assert_eq!(no_failure.exit_code(), crate::KSFT_PASS, "an XPASS is no failure, as in kselftest");
        let mut merged = tally;
        merged.merge(no_failure);
        assert_eq!((merged.tests(), merged.xpass, merged.fail), (10, 2, 1));
    }

    #[test]
    fn program_lines_round_trip() {
        for code in [crate::KSFT_PASS, crate::KSFT_SKIP, crate::KSFT_FAIL, 139] {
            let line = program_result_line(3, "vfio", "prog 0000:00:03.0", code);
            let Some(TapLine::Result { status, number, name, reason }) = parse_line(&line) else { panic!("{line}") };
            assert_eq!(number, 3);
            assert_eq!(program_named("vfio", &name), Some("prog 0000:00:03.0"), "{line}");
            assert_eq!(program_exit_code(status, &reason), code, "{line}");
        }
        assert_eq!(program_named("vfio", &program_header("vfio", "p")), Some("p"));
        assert_eq!(program_named("net", &program_header("vfio", "p")), None);
        assert_eq!(running(&run_marker("f.v.t")), Some("f.v.t"));
        assert_eq!(running("#  RUN           f.v.t ..."), Some("f.v.t"), "nested");
        assert_eq!(running(" RUNNING f.v.t"), None);
    }
}
