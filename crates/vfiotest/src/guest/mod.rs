//! The guest side of `vfiotest vm`: the init that runs inside the emulated machine, what it and
//! the host say to each other, and the setup proof it can run instead of the suite.

pub mod init;
pub mod protocol;
pub mod setup_proof;
