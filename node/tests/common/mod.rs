//! Starts the `spate` binary on a free loopback port with a fresh data dir under the
//! target directory (not /tmp, which may be tmpfs and refuse O_DIRECT).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub addr: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl Broker {
    pub fn start(name: &str) -> Broker {
        let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        Self::start_in(data_dir)
    }

    pub fn start_in(data_dir: PathBuf) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
            .args(["--data-dir", data_dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--cores", "2"])
            .env("SPATE_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spate");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listen=").nth(1) {
                    if line.contains("ready to serve") {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                    }
                }
                eprintln!("[spate] {line}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = rx.recv_timeout(deadline - Instant::now()).expect("broker did not become ready");
        Broker { addr, data_dir, child }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
