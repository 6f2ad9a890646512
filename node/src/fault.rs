//! Fail-stop: a bug or a fault the broker cannot recover from ends the process, loudly,
//! instead of leaving a half-working broker behind (see `docs/failures.md`).
//!
//! * A panic on any thread aborts the process after the panic is logged with the
//!   thread's name. Without this a panic inside a compio task is caught by the runtime:
//!   the task is gone (a partition's writer, say), the shard keeps answering pings, and
//!   the partition hangs forever while `/health` says 200. The release profile also sets
//!   `panic = "abort"`; the hook makes the dev build (and the tests that run it) behave
//!   the same way.
//! * [`fail_stop`] is Kafka's `ProcessTerminatingFaultHandler`: log the fault and exit
//!   with status 1, for faults such as a metadata log that cannot be written.

use std::fmt::Display;

/// Install the panic hook: log the panic (thread, location, message, backtrace) through
/// `tracing` and straight to stderr, then abort.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("<unnamed>").to_string();
        let message = panic_message(info.payload());
        let location = info
            .location()
            .map(|l| l.to_string())
            .unwrap_or_else(|| "<unknown>".into());
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(thread = %thread, location = %location, "panic: {message}; aborting the broker");
        // Also unformatted on stderr, in case the log goes elsewhere or is filtered.
        eprintln!("spate: thread '{thread}' panicked at {location}: {message}\nspate: aborting (a panic is a bug; see docs/failures.md)\nbacktrace:\n{backtrace}");
        std::process::abort();
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// Log a fault the broker cannot continue after and exit with status 1 (Kafka's
/// `ProcessTerminatingFaultHandler` halts the same way). Nothing is answered or flushed
/// any more: whatever the broker acknowledged is already durable, and a restart recovers
/// from the files.
pub fn fail_stop(what: &str, error: &dyn Display) -> ! {
    tracing::error!(error = %error, "fatal fault: {what}; stopping the broker");
    eprintln!("spate: fatal fault: {what}: {error}; stopping the broker");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Set in the child process that [`panic_in_a_named_thread_aborts`] starts.
    const CHILD_ENV: &str = "SPATE_TEST_PANIC_CHILD";

    /// The hook is what production installs: this test runs itself again as a child
    /// process (the same test binary, only this test), where the child installs the hook
    /// and panics inside a task on a compio runtime on a named thread, as a shard's
    /// writer task would. The child must die of SIGABRT (not exit 0 or hang), after
    /// logging the thread's name and the panic message.
    #[test]
    fn panic_in_a_named_thread_aborts() {
        if std::env::var_os(CHILD_ENV).is_some() {
            super::install_panic_hook();
            let worker = std::thread::Builder::new()
                .name("spate-shard-7".into())
                .spawn(|| {
                    let rt = compio::runtime::Runtime::new().expect("runtime");
                    rt.block_on(async {
                        // A detached task that panics: compio catches this unwind
                        // when no hook aborts first.
                        compio::runtime::spawn(async { panic!("injected test panic") }).detach();
                        compio::time::sleep(std::time::Duration::from_millis(200)).await;
                    });
                })
                .expect("spawn");
            let _ = worker.join();
            // Reaching this line means the panic was swallowed.
            std::process::exit(0);
        }
        let exe = std::env::current_exe().expect("test binary path");
        let out = Command::new(exe)
            .args([
                "fault::tests::panic_in_a_named_thread_aborts",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "child must abort; status {:?}, stderr:\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("thread 'spate-shard-7' panicked"),
            "stderr:\n{stderr}"
        );
        assert!(stderr.contains("injected test panic"), "stderr:\n{stderr}");
    }

    /// Production builds are compiled with `panic = "abort"` as well (no unwinding code,
    /// and no way for a runtime to catch a panic even if the hook were replaced).
    #[test]
    fn release_profile_aborts_on_panic() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("workspace Cargo.toml");
        let doc: toml::Table = text.parse().expect("Cargo.toml parses");
        let panic = doc
            .get("profile")
            .and_then(|p| p.get("release"))
            .and_then(|r| r.get("panic"))
            .and_then(|v| v.as_str());
        assert_eq!(panic, Some("abort"));
    }
}
