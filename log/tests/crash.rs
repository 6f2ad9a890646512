//! Crash consistency: a child process appends with flush-every-write and prints every
//! acknowledged batch; the parent kills it with SIGKILL, reopens the log and checks
//! that every acknowledged batch is there, intact.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use spate_log::{LogConfig, PartitionLog};

const ENV: &str = "SPATE_LOG_CRASH_DIR";

fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        flush_messages: 1,
        preallocate_bytes: 1 << 20,
        allow_buffered_fallback: false,
        ..LogConfig::default()
    }
}

fn spec(seed: u64) -> (i32, usize) {
    ((seed % 3) as i32 + 1, 100 + (seed as usize * 131) % 5000)
}

/// Child side: only does something when started by the parent test.
#[compio::test]
async fn crash_child() {
    let Ok(dir) = std::env::var(ENV) else { return };
    let log = PartitionLog::open(dir.into(), crash_config())
        .await
        .unwrap();
    let out = std::io::stdout();
    let mut seed = 0u64;
    // Bounded: the parent kills us long before this ends.
    for _round in 0..1_000_000 {
        // A few appends in flight at once (group commit), then report each ack.
        let mut futs = Vec::new();
        let mut seeds = Vec::new();
        for _ in 0..4 {
            let (count, len) = spec(seed);
            futs.push(log.append(batch(seed, count, seed as i64, len)));
            seeds.push(seed);
            seed += 1;
        }
        for (r, s) in join_all(futs).await.into_iter().zip(seeds) {
            let info = r.unwrap();
            let mut o = out.lock();
            writeln!(o, "ACK {} {s}", info.base_offset).unwrap();
            o.flush().unwrap();
        }
    }
}

#[compio::test]
async fn kill9_loses_no_acknowledged_batch() {
    let t = tempdir();
    let dir = t.path().join("crash-0");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut it = line.split_whitespace();
            if it.next() != Some("ACK") {
                continue;
            }
            let base: i64 = it.next().unwrap().parse().unwrap();
            let seed: u64 = it.next().unwrap().parse().unwrap();
            acks.push((base, seed));
        }
        acks
    });
    // Let it write for a while (bounded), then kill -9.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acks = reader.join().unwrap();
    assert!(
        acks.len() > 20,
        "child acknowledged only {} batches",
        acks.len()
    );

    let log = PartitionLog::open(dir.clone(), crash_config())
        .await
        .unwrap();
    let (last_base, last_seed) = *acks.iter().max().unwrap();
    assert!(log.log_end_offset() > last_base + spec(last_seed).0 as i64 - 2);
    for &(base, seed) in &acks {
        let (count, len) = spec(seed);
        let want = with_base(&batch(seed, count, seed as i64, len), base);
        let r = log.read(base, 1, true).await.unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(
            &r.batches[0][..],
            &want[..],
            "acknowledged batch at {base} (seed {seed})"
        );
    }
    // The recovered log accepts appends at its end.
    let end = log.log_end_offset();
    assert_eq!(
        log.append(batch(1, 1, 1, 10)).await.unwrap().base_offset,
        end
    );
    log.close().await.unwrap();
    eprintln!(
        "{} acknowledged batches survived SIGKILL; log end {end}",
        acks.len()
    );
}

const ENOSPC_ENV: &str = "SPATE_LOG_FSIZE_DIR";

/// Child side: with a 1 MiB file size limit, writes fail (EFBIG, like a full disk).
#[compio::test]
async fn file_limit_child() {
    let Ok(dir) = std::env::var(ENOSPC_ENV) else {
        return;
    };
    // SAFETY: plain libc calls in a dedicated child process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let cfg = LogConfig {
        segment_bytes: 64 << 20,
        preallocate_bytes: 0,
        ..crash_config()
    };
    let log = PartitionLog::open(dir.into(), cfg).await.unwrap();
    let mut acked = 0u64;
    let err = loop {
        match log.append(batch(acked, 1, 1, 10_000)).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 1000, "the file size limit never hit");
    };
    println!("FIRST_ERROR {err}");
    let again = log.append(batch(0, 1, 1, 100)).await.unwrap_err();
    println!("THEN {again}");
    println!("ACKED {acked}");
    // Reads of acknowledged data still work.
    let r = log.read(0, 1, true).await.unwrap();
    println!("READ {}", r.batches.len());
}

#[test]
fn write_failure_takes_log_offline() {
    let t = tempdir();
    let dir = t.path().join("efbig");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "file_limit_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENOSPC_ENV, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().find(|l| l.contains("FIRST_ERROR")).unwrap();
    assert!(
        first.contains("writing") && first.contains(".log") && first.contains("File too large"),
        "{first}"
    );
    let then = stdout.lines().find(|l| l.contains("THEN")).unwrap();
    assert!(then.contains("offline"), "{then}");
    assert!(stdout.contains("READ 1"), "{stdout}");
}
