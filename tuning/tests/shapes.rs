//! spate-tune against recorded sysfs/procfs trees of several machine shapes
//! (tests/fixtures/<shape>/{sys,proc}): exact plans and expected findings.

use std::path::PathBuf;

use spate_tune::{check, output, plan, Finding, Host, Options, Roots, Severity};

fn fixture(name: &str) -> Host {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    assert!(dir.is_dir(), "missing fixture {}", dir.display());
    Host::read(&Roots::recorded(&dir, &dir))
}

fn ids(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.id).collect()
}

fn severity_of(findings: &[Finding], id: &str) -> Vec<Severity> {
    findings
        .iter()
        .filter(|f| f.id == id)
        .map(|f| f.severity)
        .collect()
}

fn cpus(host: &Host, opts: Options) -> Vec<u32> {
    plan(host, &opts).cpu_list
}

fn range(a: u32, b: u32) -> Vec<u32> {
    (a..=b).collect()
}

fn concat(parts: &[Vec<u32>]) -> Vec<u32> {
    parts.concat()
}

/// The TOML snippet parses as the broker reads it and holds exactly the plan's CPUs.
fn assert_toml_matches(host: &Host, opts: &Options) {
    let p = plan(host, opts);
    let text = output::plan_toml(&p);
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(table.len(), 1, "only cpu_list may be set:\n{text}");
    let list: Vec<u32> = table["cpu_list"]
        .as_array()
        .expect("cpu_list is an array")
        .iter()
        .map(|v| v.as_integer().expect("integer") as u32)
        .collect();
    assert_eq!(list, p.cpu_list);
}

#[test]
fn one_node_eight_cores_smt_off() {
    let host = fixture("one-node-8c");
    assert_eq!(host.topology.online, range(0, 7));
    assert_eq!(host.topology.cores().len(), 8);
    assert!(!host.topology.smt_active());
    let p = plan(&host, &Options::default());
    assert_eq!(p.cpu_list, range(1, 7));
    assert_eq!(p.reserved.len(), 1);
    assert_eq!(p.reserved[0].cpus, vec![0]);
    // Unpinned NIC IRQs (120-124) move to the reserved core; the NVMe IRQ is not the NIC's.
    let moved: Vec<u32> = p.irq_moves.iter().map(|m| m.irq).collect();
    assert_eq!(moved, vec![120, 121, 122, 123, 124]);
    assert!(p
        .irq_moves
        .iter()
        .all(|m| m.to == vec![0] && m.nic == "eth0"));
    assert!(p
        .shards
        .iter()
        .all(|s| s.local_nics == vec!["eth0".to_string()] && s.node == Some(0)));

    let f = check(&host);
    assert_eq!(ids(&f), vec!["nic-irqs-unpinned"], "{f:#?}");
    assert_eq!(
        cpus(
            &host,
            Options {
                shards: Some(3),
                ..Options::default()
            }
        ),
        vec![1, 2, 3]
    );
    assert_eq!(
        cpus(
            &host,
            Options {
                irq_cores: 0,
                ..Options::default()
            }
        ),
        range(0, 7)
    );
    assert_toml_matches(&host, &Options::default());
}

#[test]
fn one_node_nics_and_disks_are_classified() {
    let host = fixture("one-node-8c");
    let names: Vec<(&str, bool)> = host
        .nics
        .iter()
        .map(|n| (n.name.as_str(), n.physical))
        .collect();
    assert_eq!(
        names,
        vec![("docker0", false), ("eth0", true), ("lo", false)]
    );
    let eth0 = &host.nics[1];
    assert_eq!(eth0.bus_id.as_deref(), Some("0000:01:00.0"));
    assert_eq!(eth0.driver.as_deref(), Some("ixgbe"));
    assert_eq!(eth0.numa_node, None, "numa_node -1 means unknown");
    // loop devices are skipped.
    let disks: Vec<&str> = host.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(disks, vec!["nvme0n1"]);
    assert_eq!(host.kernel.governors.len(), 1);
    assert_eq!(host.kernel.governors[0].name, "performance");
    assert_eq!(
        host.kernel.memlock,
        Some(spate_tune::kernel::Limit::Bytes(8 << 20))
    );
    assert_eq!(
        host.kernel.io_uring_probe, None,
        "no live probe on a recorded tree"
    );
}

#[test]
fn two_numa_nodes_smt_on() {
    let host = fixture("two-node-smt");
    let cores = host.topology.cores();
    assert_eq!(cores.len(), 16);
    assert_eq!(cores[0].threads, vec![0, 16]);
    assert_eq!(cores[8].threads, vec![8, 24]);
    assert_eq!(cores[8].node, Some(1));

    let p = plan(&host, &Options::default());
    assert_eq!(p.cpu_list, concat(&[range(1, 7), range(9, 15)]));
    let reserved: Vec<Vec<u32>> = p.reserved.iter().map(|k| k.cpus.clone()).collect();
    assert_eq!(reserved, vec![vec![0, 16], vec![8, 24]]);
    let s9 = p.shards.iter().find(|s| s.cpu == 9).unwrap();
    assert_eq!((s9.node, s9.idle_siblings.clone()), (Some(1), vec![25]));
    assert_eq!(s9.local_nics, vec!["ens1f0np0".to_string()]);
    let s1 = p.shards.iter().find(|s| s.cpu == 1).unwrap();
    assert_eq!((s1.node, s1.local_nics.len()), (Some(0), 0));
    // IRQs of the node-1 NIC move to node 1's reserved core.
    assert!(p.irq_moves.iter().all(|m| m.to == vec![8, 24]));
    assert_eq!(p.irq_moves.len(), 3);

    // A smaller plan fills the NIC's node first.
    assert_eq!(
        cpus(
            &host,
            Options {
                shards: Some(4),
                ..Options::default()
            }
        ),
        range(9, 12)
    );
    assert_eq!(
        cpus(
            &host,
            Options {
                shards: Some(9),
                ..Options::default()
            }
        ),
        concat(&[vec![1, 2], range(9, 15)])
    );
    // SMT allowed: every thread of the non-reserved cores.
    assert_eq!(
        cpus(
            &host,
            Options {
                allow_smt: true,
                ..Options::default()
            }
        ),
        concat(&[range(1, 7), range(9, 15), range(17, 23), range(25, 31)])
    );
    // Physical cores first, then siblings.
    assert_eq!(
        cpus(
            &host,
            Options {
                allow_smt: true,
                shards: Some(16),
                ..Options::default()
            }
        ),
        concat(&[range(1, 7), range(9, 15), vec![25, 26]])
    );
    assert_eq!(
        cpus(
            &host,
            Options {
                numa_node: Some(1),
                ..Options::default()
            }
        ),
        range(9, 15)
    );
    assert_eq!(
        cpus(
            &host,
            Options {
                numa_node: Some(0),
                ..Options::default()
            }
        ),
        range(1, 7)
    );
    assert_eq!(
        cpus(
            &host,
            Options {
                irq_cores: 2,
                ..Options::default()
            }
        ),
        concat(&[range(2, 7), range(10, 15)])
    );
    let too_many = plan(
        &host,
        &Options {
            shards: Some(20),
            ..Options::default()
        },
    );
    assert_eq!(too_many.cpu_list.len(), 14);
    assert!(
        too_many
            .notes
            .iter()
            .any(|n| n.contains("20 shards asked for, 14 CPUs")),
        "{:?}",
        too_many.notes
    );

    let f = check(&host);
    let found = ids(&f);
    for id in [
        "smt-on",
        "numa-multi",
        "nic-irqs-unpinned",
        "disk-scheduler",
        "disk-rotational",
        "disk-block-size",
        "io-uring-unknown",
    ] {
        assert!(found.contains(&id), "{id} missing from {found:?}");
    }
    assert_eq!(severity_of(&f, "disk-scheduler"), vec![Severity::Warning]);
    assert!(!found.contains(&"memlock-low"), "memlock is unlimited");
    assert!(
        f.windows(2).all(|w| w[0].severity <= w[1].severity),
        "sorted by severity"
    );
    assert_toml_matches(&host, &Options::default());
    assert_toml_matches(
        &host,
        &Options {
            allow_smt: true,
            ..Options::default()
        },
    );
}

#[test]
fn isolated_cpus_get_the_shards() {
    let host = fixture("isolated");
    assert_eq!(host.topology.isolated, range(2, 7));
    let p = plan(&host, &Options::default());
    assert_eq!(p.cpu_list, range(2, 7));
    assert!(p.shards.iter().all(|s| s.isolated));
    assert_eq!(p.reserved.len(), 1);
    assert_eq!(p.reserved[0].cpus, vec![0]);
    assert!(p.reserved[0].reason.contains("NIC interrupts"));
    assert_eq!(p.unused.len(), 1);
    assert_eq!(p.unused[0].cpus, vec![1]);
    assert!(p.irq_moves.is_empty(), "IRQs are already on CPU 0");
    assert!(p.notes.iter().any(|n| n.contains("taskset -c 2-7")));

    // Operator keeps the isolated CPUs for something else.
    let avoid = plan(
        &host,
        &Options {
            avoid_isolated: true,
            ..Options::default()
        },
    );
    assert_eq!(avoid.cpu_list, vec![1]);
    // More shards than isolated cores: the non-isolated spare core joins.
    assert_eq!(
        cpus(
            &host,
            Options {
                shards: Some(7),
                ..Options::default()
            }
        ),
        range(1, 7)
    );

    let f = check(&host);
    let found = ids(&f);
    for id in ["isolated-cpus", "nohz-full", "nic-irqs-pinned"] {
        assert!(found.contains(&id), "{id} missing from {found:?}");
    }
    assert!(!found.contains(&"nic-irqs-unpinned"));
    assert!(!found.contains(&"nic-irqs-on-isolated"));
    assert_toml_matches(&host, &Options::default());
}

#[test]
fn nic_irqs_pinned_to_cpus_0_and_1() {
    let host = fixture("nic-irq-pinned");
    let physical: Vec<&str> = host.physical_nics().map(|n| n.name.as_str()).collect();
    assert_eq!(physical, vec!["ens3"]);
    let virtuals: Vec<&str> = host
        .nics
        .iter()
        .filter(|n| !n.physical)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(virtuals, vec!["br0", "lo", "veth1a2b3c"]);
    // Matched through device/msi_irqs; IRQ 50 (another virtio device) is not the NIC's.
    let irqs: Vec<u32> = host
        .nics
        .iter()
        .find(|n| n.name == "ens3")
        .unwrap()
        .irqs
        .iter()
        .map(|i| i.number)
        .collect();
    assert_eq!(irqs, vec![40, 41, 42, 43]);

    let p = plan(&host, &Options::default());
    assert_eq!(p.cpu_list, range(2, 7));
    let reserved: Vec<Vec<u32>> = p.reserved.iter().map(|k| k.cpus.clone()).collect();
    assert_eq!(reserved, vec![vec![0], vec![1]]);
    assert!(p
        .reserved
        .iter()
        .all(|k| k.reason.starts_with("takes NIC interrupts")));
    assert!(p.irq_moves.is_empty());
    // --irq-cores 0 reserves nothing extra, but CPUs taking NIC IRQs stay shard-free.
    assert_eq!(
        cpus(
            &host,
            Options {
                irq_cores: 0,
                ..Options::default()
            }
        ),
        range(2, 7)
    );
    // Two extra OS cores requested: both IRQ cores already count on this node.
    assert_eq!(
        cpus(
            &host,
            Options {
                irq_cores: 3,
                ..Options::default()
            }
        ),
        range(3, 7)
    );

    let f = check(&host);
    assert!(ids(&f).contains(&"nic-irqs-pinned"));
    assert!(!ids(&f).contains(&"nic-irqs-unpinned"));
    assert!(f
        .iter()
        .any(|x| x.id == "nic-irqs-pinned" && x.title.contains("CPUs 0-1")));
    assert_toml_matches(&host, &Options::default());
}

#[test]
fn thp_always_and_powersave() {
    let host = fixture("thp-always");
    assert_eq!(cpus(&host, Options::default()), vec![1, 2, 3]);
    let f = check(&host);
    assert_eq!(severity_of(&f, "thp-always"), vec![Severity::Warning]);
    assert_eq!(
        severity_of(&f, "thp-defrag-always"),
        vec![Severity::Warning]
    );
    // acpi-cpufreq powersave is the lowest fixed frequency: a warning.
    assert_eq!(
        severity_of(&f, "governor-powersave"),
        vec![Severity::Warning]
    );
    // 8 KiB logical blocks break 4 KiB O_DIRECT writes; a queue depth of 16 is shallow.
    assert_eq!(severity_of(&f, "disk-block-size"), vec![Severity::Critical]);
    assert_eq!(severity_of(&f, "disk-queue-shallow"), vec![Severity::Info]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(ids(&f).contains(&"nic-none"));
}

#[test]
fn io_uring_disabled() {
    let host = fixture("io-uring-disabled");
    assert_eq!(host.kernel.io_uring_disabled, Some(2));
    let f = check(&host);
    assert_eq!(
        severity_of(&f, "io-uring-disabled"),
        vec![Severity::Critical]
    );
    assert!(!ids(&f).contains(&"io-uring-unknown"));
    // 64 KiB on 6.6: rings are charged to the memory cgroup, so only info.
    assert_eq!(severity_of(&f, "memlock-low"), vec![Severity::Info]);
    assert_eq!(cpus(&host, Options::default()), vec![1, 2, 3]);
}

#[test]
fn small_memlock_on_an_old_kernel() {
    let host = fixture("old-kernel-memlock");
    assert_eq!(host.kernel.version(), Some((5, 10)));
    let f = check(&host);
    assert_eq!(severity_of(&f, "memlock-low"), vec![Severity::Warning]);
    assert!(f
        .iter()
        .any(|x| x.id == "memlock-low" && x.title.contains("64 KiB")));
    assert!(ids(&f).contains(&"io-uring-unknown"));
}

#[test]
fn empty_tree_is_unknown_not_a_panic() {
    let host = fixture("empty");
    assert!(host.topology.unknown());
    assert!(host.nics.is_empty() && host.disks.is_empty());
    assert_eq!(host.kernel.memlock, None);
    let f = check(&host);
    assert!(ids(&f).contains(&"topology-unknown"));
    let p = plan(&host, &Options::default());
    assert!(p.cpu_list.is_empty());
    let text = output::report_text(&host, &f);
    assert!(text.contains("CPUs            unknown"), "{text}");
    assert!(output::plan_toml(&p).contains("cpu_list = []"));
    // A root that does not exist at all behaves the same.
    let none = Host::read(&Roots::recorded(
        "/nonexistent/spate-tune",
        "/nonexistent/spate-tune",
    ));
    assert!(none.topology.unknown());
}

#[test]
fn json_outputs_parse() {
    let host = fixture("two-node-smt");
    let f = check(&host);
    let report: serde_json::Value = serde_json::from_str(&output::report_json(&host, &f)).unwrap();
    assert_eq!(
        report["host"]["topology"]["online"]
            .as_array()
            .unwrap()
            .len(),
        32
    );
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == "smt-on" && x["severity"] == "warning"));
    let p = plan(&host, &Options::default());
    let planned: serde_json::Value = serde_json::from_str(&output::plan_json(&p)).unwrap();
    assert_eq!(planned["cpu_list"].as_array().unwrap().len(), 14);
    assert_eq!(planned["shards"][0]["cpu"], 1);
}

#[test]
fn one_core_keeps_its_shard() {
    use spate_tune::topology::{Cpu, Topology};
    let mut host = fixture("empty");
    host.topology = Topology {
        online: vec![0],
        cpus: vec![Cpu {
            id: 0,
            core_id: Some(0),
            package: Some(0),
            siblings: vec![0],
            node: None,
        }],
        ..Topology::default()
    };
    let p = plan(&host, &Options::default());
    assert_eq!(p.cpu_list, vec![0]);
    assert!(p.reserved.is_empty());
    assert!(
        p.notes.iter().any(|n| n.contains("too few cores")),
        "{:?}",
        p.notes
    );
}

#[test]
fn unknown_numa_node_gives_no_plan() {
    let host = fixture("two-node-smt");
    let p = plan(
        &host,
        &Options {
            numa_node: Some(7),
            ..Options::default()
        },
    );
    assert!(p.cpu_list.is_empty());
    assert!(p
        .notes
        .iter()
        .any(|n| n.contains("NUMA node 7 has no online CPUs")));
}

#[test]
fn an_existing_cpu_list_is_checked() {
    use spate_tune::shardcheck;
    // Every CPU of the SMT machine, as the broker's default would run.
    let host = fixture("two-node-smt");
    let f = shardcheck::check(&host, &range(0, 31));
    assert_eq!(ids(&f), vec!["shards-share-core", "shards-span-nodes"]);
    assert!(f[0].title.starts_with("16 physical core(s)"));
    // The plan itself is clean apart from spanning both nodes.
    let p = plan(&host, &Options::default());
    assert_eq!(
        ids(&shardcheck::check(&host, &p.cpu_list)),
        vec!["shards-span-nodes"]
    );
    assert!(shardcheck::check(&host, &range(9, 15)).is_empty());

    let host = fixture("nic-irq-pinned");
    let f = shardcheck::check(&host, &concat(&[range(0, 7), vec![40]]));
    assert_eq!(ids(&f), vec!["shards-offline-cpu", "shards-on-irq-cpus"]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[1].title.contains("CPUs 0-1"), "{}", f[1].title);
    assert!(shardcheck::check(&host, &range(2, 7)).is_empty());
}

#[test]
fn more_irq_cores_than_cores_still_leaves_one_shard() {
    let host = fixture("thp-always");
    let p = plan(
        &host,
        &Options {
            irq_cores: 100,
            ..Options::default()
        },
    );
    assert_eq!(p.cpu_list, vec![3]);
    assert_eq!(p.reserved.len(), 3);
}
