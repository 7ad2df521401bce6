//! The guest side of `vfiotest vm`: the init that runs inside the emulated machine, what it and
//! the host say to each other, and the setup proof it can run instead of the suite.

pub mod init;
pub mod protocol;
pub mod setup_proof;

/// Where this binary is in the guest.
pub const ME: &str = "/bin/vfiotest";

/// Runs `vfiotest ARGS` in the guest: its exit code (-1 if it could not start) and what it
/// said, stdout then stderr.
pub fn run_me(args: &[&str]) -> (i32, String) {
    match std::process::Command::new(ME).args(args).output() {
        Ok(out) => (
            out.status.code().unwrap_or(ksft::KSFT_FAIL),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => (-1, format!("starting {ME}: {e}")),
    }
}
