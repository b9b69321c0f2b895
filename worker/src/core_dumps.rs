//! Core dumps off for the whole process, from the start: an abort or a
//! crash must not write the job credentials in memory (SSH keys, registry
//! passwords, tokens) to a core file, nor let another process of the same
//! user read them through ptrace or `/proc/<pid>/mem`.

use rustix::io::Errno;
use rustix::process::{setrlimit, Resource, Rlimit};

/// Turns core dumps off: RLIMIT_CORE 0 (soft and hard, so nothing later
/// raises it) and, on Linux, not dumpable. Each failure is a warning: the
/// worker still runs correctly, only less hardened.
pub(crate) fn disable() {
    match limit_to_zero() {
        Ok(()) => tracing::debug!("core dumps disabled: RLIMIT_CORE is 0 (soft and hard)"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set RLIMIT_CORE to 0; a crash may dump job credentials to a core file")
        }
    }
    #[cfg(target_os = "linux")]
    match not_dumpable() {
        Ok(()) => tracing::debug!("process marked not dumpable (PR_SET_DUMPABLE 0)"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark the process not dumpable (PR_SET_DUMPABLE 0)")
        }
    }
}

fn limit_to_zero() -> Result<(), Errno> {
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, zero)
}

/// RLIMIT_CORE does not bind a core_pattern that pipes to a handler
/// (systemd-coredump, apport); not dumpable does (unless the host sets
/// fs.suid_dumpable to 2), and it also refuses ptrace by the same user.
#[cfg(target_os = "linux")]
fn not_dumpable() -> Result<(), Errno> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::getrlimit;

    // In the test process itself: no test needs core dumps or ptrace.
    #[test]
    fn disable_leaves_no_core_limit_and_not_dumpable() {
        disable();
        let limit = getrlimit(Resource::Core);
        assert_eq!(limit.current, Some(0));
        assert_eq!(limit.maximum, Some(0));
        #[cfg(target_os = "linux")]
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
