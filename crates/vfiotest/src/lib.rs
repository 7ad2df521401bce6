//! The test programs and the emulated machine behind the `vfiotest` command, as a library so
//! that its own end-to-end tests take names, modes and the topology from the source of truth.

#![deny(unsafe_code)]

pub mod bench;
pub mod cache;
pub mod guest;
pub mod programs;
pub mod reports;
pub mod setup;
pub mod suite;
pub mod vm;

use ksft::{KSFT_FAIL, KSFT_SKIP};

/// A one-line error for the user, with the kselftest exit code to leave with.
#[derive(Debug)]
pub struct Fatal {
    /// The exit code.
    pub code: i32,
    /// What went wrong, in one line.
    pub message: String,
}

impl Fatal {
    /// Exit 1 with `message`.
    pub fn fail(message: impl Into<String>) -> Self {
        Self { code: KSFT_FAIL, message: message.into() }
    }

    /// Exit 4 (skip) with `message`.
    pub fn exit_skip(message: impl Into<String>) -> Self {
        Self { code: KSFT_SKIP, message: message.into() }
    }

    /// The message as the user sees it: one line, and short enough to read even when it
    /// quotes a huge argument (its middle is cut).
    pub fn line(&self) -> String {
        const MOST: usize = 400;
        let line = self.message.replace('\n', "; ");
        let chars = line.chars().count();
        if chars <= MOST {
            return line;
        }
        let head: String = line.chars().take(MOST / 2).collect();
        let tail: String = line.chars().skip(chars - MOST / 4).collect();
        format!("{head}…({} characters cut)…{tail}", chars - MOST / 2 - MOST / 4)
    }
}

/// clap's complaint in one line: its first line, with the list that follows it when it ends in
/// a colon (`the following required arguments were not provided: --patch <FILE>`).
pub fn clap_error_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_owned();
    match first.ends_with(':') {
        true => {
            let listed: Vec<&str> = lines.take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            format!("{first} {}", listed.join(", "))
        }
        false => first,
    }
}

impl<E: std::error::Error> From<E> for Fatal {
    fn from(e: E) -> Self {
        Self::fail(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_shows_as_one_readable_line() {
        let huge = super::Fatal::fail(format!("{:?} is neither a test program nor a BDF\nsecond", "x".repeat(100_000)));
        let line = huge.line();
        assert!(!line.contains('\n') && line.chars().count() < 450, "{}", line.len());
        assert!(line.starts_with("\"xxx") && line.ends_with("nor a BDF; second"), "{line}");
        assert_eq!(super::Fatal::fail("short").line(), "short");
    }

    #[test]
    fn a_clap_error_is_one_line_with_what_it_lists() {
        let command = || {
            clap::Command::new("vm")
                .arg(clap::Arg::new("patch").long("patch").value_name("FILE"))
                .arg(clap::Arg::new("baseline").long("baseline").num_args(0).requires("patch"))
        };
        let e = command().try_get_matches_from(["vm", "--baseline"]).unwrap_err();
        assert_eq!(super::clap_error_line(&e), "the following required arguments were not provided: --patch <FILE>");
        let e = command().try_get_matches_from(["vm", "--nonsense"]).unwrap_err();
        assert_eq!(super::clap_error_line(&e), "unexpected argument '--nonsense' found");
    }
}
