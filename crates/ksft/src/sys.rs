//! The harness's one system call that needs `unsafe`: `fork()`, as kselftest_harness.h starts
//! each test.

#![allow(unsafe_code)]

use std::io::{self, Write};

use rustix::process::Pid;

/// Which side of a fork this is.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The caller, with the child's pid.
    Parent(Pid),
}

/// How many threads this process has, from `/proc/self/status`; `None` if it can't be read.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// Forks this process if it has only the calling thread, else returns `None` (the caller then
/// starts its child another way). Whatever is buffered in stdout and stderr is written first,
/// so the child doesn't write it again.
///
/// # Errors
/// `fork()`'s errno.
pub(crate) fn fork_if_single_threaded() -> io::Result<Option<Forked>> {
    if threads() != Some(1) {
        return Ok(None);
    }
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process has one thread (read just above; only this thread could start
    // another, and it doesn't in between), so the child can't inherit a lock that another
    // thread held at the fork: it may allocate, print and take locks as the parent would.
    // glibc's fork() runs its atfork handlers, which keep its own state consistent. The child
    // leaves only through `exit_child`, never back into the caller's frames.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Some(Forked::Child)),
        pid => Ok(Some(Forked::Parent(Pid::from_raw(pid).expect("fork() returns a positive pid to the parent")))),
    }
}

/// Ends a forked child with `code` at once, as kselftest_harness.h's children do with
/// `_exit()`: stdout and stderr flushed, nothing of the parent's run (no destructors, no
/// `atexit` handlers it registered).
pub(crate) fn exit_child(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: `_exit` only ends the process; it takes no pointers and touches no memory.
    unsafe { libc::_exit(code) }
}
