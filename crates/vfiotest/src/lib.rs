//! The test programs and the emulated machine behind the `vfiotest` command, as a library so
//! that its own end-to-end tests take names, modes and the topology from the source of truth.

#![deny(unsafe_code)]

pub mod bench;
pub mod cache;
pub mod guest;
pub mod programs;
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
}

impl<E: std::error::Error> From<E> for Fatal {
    fn from(e: E) -> Self {
        Self::fail(e.to_string())
    }
}
