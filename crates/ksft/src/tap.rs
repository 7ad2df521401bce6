//! Writing and reading TAP 13 as kselftest prints it.

use std::io::{self, Write};

/// A TAP writer. Nested documents (a program inside a multi-program run) are written with a
/// `"# "` prefix, as the kselftest runner does.
pub struct Tap<'a> {
    out: &'a mut dyn Write,
    prefix: String,
}

impl<'a> Tap<'a> {
    /// A top-level writer.
    pub fn new(out: &'a mut dyn Write) -> Self {
        Self { out, prefix: String::new() }
    }

    /// A writer for a nested document, indented one level.
    pub fn nested<'b>(&'b mut self) -> Tap<'b> {
        let prefix = format!("{}# ", self.prefix);
        Tap { out: &mut *self.out, prefix }
    }

    /// Writes one line (without its newline) and flushes, so a console shows it at once.
    pub fn line(&mut self, text: impl AsRef<str>) {
        // Output errors (a closed pipe) can't be reported anywhere better; ignore them.
        let _ = writeln!(self.out, "{}{}", self.prefix, text.as_ref());
        let _ = self.out.flush();
    }

    /// `# message`, kselftest's `ksft_print_msg`.
    pub fn msg(&mut self, text: impl AsRef<str>) {
        self.line(format!("# {}", text.as_ref()));
    }

    /// The underlying writer, for relaying a child's raw bytes.
    pub fn raw(&mut self) -> &mut dyn Write {
        &mut *self.out
    }

    /// The prefix every line gets.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Writes a child's output line through a [`Tap`], keeping the nesting prefix.
pub(crate) fn relay(tap: &mut Tap<'_>, line: &[u8]) -> io::Result<()> {
    let prefix = tap.prefix().to_owned();
    let out = tap.raw();
    out.write_all(prefix.as_bytes())?;
    out.write_all(line)?;
    out.write_all(b"\n")?;
    out.flush()
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
        /// `ok` (true) or `not ok`.
        ok: bool,
        /// The test number.
        number: u32,
        /// The test name.
        name: String,
        /// The directive (`SKIP`, `XFAIL`, `XPASS`) if any.
        directive: Option<String>,
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
            if ["SKIP", "XFAIL", "XPASS", "TODO"].contains(&word) {
                (name.to_owned(), Some(word.to_owned()), tail[word.len()..].trim().to_owned())
            } else {
                (name.to_owned(), None, tail.trim().to_owned())
            }
        }
    };
    Some(TapLine::Result { ok, number, name, directive, reason })
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
                ok: true,
                number: 2,
                name: "f.v.t".into(),
                directive: Some("SKIP".into()),
                reason: "BAR too small (size=0x800)".into()
            })
        );
        assert_eq!(
            parse_line("not ok 3 f.v.t"),
            Some(TapLine::Result {
                ok: false,
                number: 3,
                name: "f.v.t".into(),
                directive: None,
                reason: String::new()
            })
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
}
