//! vfiotest's reports: the results document one run writes (versioned, with a JSON schema
//! generated from its types), and the formats fleets read, made from it: KCIDB for KernelCI,
//! JUnit XML for CI dashboards, and LAVA's test signals.
//!
//! Every format is made from a [`Results`] document, so they agree with each other and with
//! the TAP the document was read from.

#![deny(unsafe_code, missing_docs)]

pub mod junit;
pub mod kcidb;
pub mod lava;
pub mod results;

pub use results::{Bar, BarKind, Device, Emulated, Kernel, Machine, Results, SCHEMA_VERSION, TestRecord, Tool};

/// Why a document can't be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON, or not a results document.
    #[error("not a vfiotest results document: {0}")]
    Json(serde_json::Error),
    /// A version this reader doesn't know.
    #[error("results schema_version {0} is not {SCHEMA_VERSION}, the one this vfiotest reads")]
    Version(u32),
    /// Totals that don't count the tests.
    #[error("the results' totals don't match their tests")]
    Totals,
    /// An origin KCIDB would refuse.
    #[error("KCIDB origin {0:?} must be lowercase letters, digits and '_'")]
    Origin(String),
}
