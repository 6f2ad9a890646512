//! The spate-tune binary on recorded trees.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let args: Vec<String> = args.iter().map(|a| a.replace("FIX", dir)).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_spate-tune"))
        .args(&args)
        .output()
        .expect("run spate-tune");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn plan_prints_toml_with_a_comment_per_shard() {
    let (ok, out) = run(&[
        "plan",
        "--sysfs-root",
        "FIX/two-node-smt",
        "--procfs-root",
        "FIX/two-node-smt",
        "--shards",
        "2",
    ]);
    assert!(ok);
    assert!(out.contains("cpu_list = [\n"), "{out}");
    assert!(out.contains("  9,  # shard 0: CPU 9, core 1 of package 1, NUMA node 1, NIC-local (ens1f0np0), SMT sibling 25 idle"), "{out}");
    assert!(out.contains("  10, # shard 1: CPU 10"), "{out}");
    assert!(out.contains("spate --cpu-list 9-10"), "{out}");
    assert!(
        out.contains("echo 8,24 > /proc/irq/201/smp_affinity_list"),
        "{out}"
    );
}

#[test]
fn report_text_and_json() {
    let (ok, out) = run(&["report", "--root", "FIX/thp-always"]);
    assert!(ok);
    assert!(
        out.contains("[WARNING] Transparent huge pages: enabled = always (thp-always)"),
        "{out}"
    );
    assert!(
        out.contains("[CRITICAL] nvme0n1: logical block size 8192 bytes"),
        "{out}"
    );
    let (ok, out) = run(&[
        "report",
        "--root",
        "FIX/io-uring-disabled",
        "--format",
        "json",
    ]);
    assert!(ok);
    assert!(out.contains("\"id\": \"io-uring-disabled\""), "{out}");
}

#[test]
fn one_root_given_never_reads_the_live_host() {
    // Only --sysfs-root: procfs comes from the same recorded directory, not from /.
    let (ok, out) = run(&["report", "--sysfs-root", "FIX/empty"]);
    assert!(ok);
    assert!(out.contains("kernel          unknown"), "{out}");
    assert!(out.contains("not probed"), "{out}");
}

#[test]
fn empty_plan_fails() {
    let (ok, out) = run(&["plan", "--root", "FIX/empty", "--format", "json"]);
    assert!(!ok);
    assert!(out.contains("\"cpu_list\": []"), "{out}");
}

#[test]
fn report_checks_a_given_cpu_list() {
    let (ok, out) = run(&[
        "report",
        "--root",
        "FIX/nic-irq-pinned",
        "--cpu-list",
        "0-7",
    ]);
    assert!(ok);
    assert!(
        out.contains(
            "[WARNING] ens3: shards on CPUs 0-1 that take its interrupts (shards-on-irq-cpus)"
        ),
        "{out}"
    );
    let (ok, _) = run(&["report", "--root", "FIX/nic-irq-pinned", "--cpu-list", "x"]);
    assert!(!ok);
}
