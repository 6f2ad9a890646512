//! Syscalls that describe the running machine. Called only when spate-tune reads the
//! live host (no --sysfs-root / --procfs-root given).

use crate::kernel::{Limit, Probe};

/// Soft RLIMIT_MEMLOCK of this process.
pub fn memlock() -> Option<Limit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 {
        return None;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        Some(Limit::Unlimited)
    } else {
        #[allow(clippy::unnecessary_cast)] // rlim_t is 32-bit on some targets
        Some(Limit::Bytes(limit.rlim_cur as u64))
    }
}

/// Create (and close) a one-entry io_uring with the raw `io_uring_setup` syscall.
/// This is what the broker's runtime does at start; seccomp filters (Docker's default
/// profile), `kernel.io_uring_disabled` and kernels built without io_uring make it fail.
pub fn probe_io_uring() -> Probe {
    // struct io_uring_params is 120 bytes with 8-byte alignment on every architecture;
    // the kernel only needs it zeroed (no flags) and fills in the offsets.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(entries, params) reads and writes `params`, which we own
    // and which is the size the kernel expects; the returned fd is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_long,
            params.as_mut_ptr(),
        )
    };
    if fd >= 0 {
        // SAFETY: fd is a descriptor we just received and own.
        unsafe { libc::close(fd as libc::c_int) };
        return Probe::Ok;
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let name = match errno {
        libc::ENOSYS => "ENOSYS",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        _ => "error",
    };
    Probe::Failed {
        errno,
        name: name.to_string(),
    }
}
