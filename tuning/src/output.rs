//! Rendering: the report as text or JSON, the plan as a TOML snippet for the broker
//! or JSON.

use std::fmt::Write;

use serde::Serialize;

use crate::cpulist;
use crate::findings::Finding;
use crate::host::Host;
use crate::planner::Plan;

fn or_unknown<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Host summary plus findings, for people.
pub fn report_text(host: &Host, findings: &[Finding]) -> String {
    let mut s = String::new();
    let topo = &host.topology;
    let cores = topo.cores();
    let _ = writeln!(
        s,
        "Host{}",
        if host.live {
            " (live)"
        } else {
            " (recorded tree)"
        }
    );
    let _ = writeln!(s, "  kernel          {}", or_unknown(&host.kernel.release));
    if topo.unknown() {
        let _ = writeln!(s, "  CPUs            unknown");
    } else {
        let threads = cores.iter().map(|c| c.threads.len()).max().unwrap_or(1);
        let _ = writeln!(s, "  CPUs            {} online ({}), {} physical cores, {} thread(s) per core, SMT control {}",
            topo.online.len(), cpulist::format(&topo.online), cores.len(), threads, or_unknown(&topo.smt_control));
    }
    if topo.nodes.is_empty() {
        let _ = writeln!(s, "  NUMA nodes      unknown");
    }
    for n in &topo.nodes {
        let _ = writeln!(
            s,
            "  NUMA node {:<5} CPUs {}",
            n.id,
            cpulist::format(&n.cpus)
        );
    }
    let list = |l: &[u32]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            cpulist::format(l)
        }
    };
    let _ = writeln!(s, "  isolated        {}", list(&topo.isolated));
    let _ = writeln!(s, "  nohz_full       {}", list(&topo.nohz_full));
    for nic in &host.nics {
        if !nic.physical {
            continue;
        }
        let _ = writeln!(
            s,
            "  NIC {:<11} {} driver {}, NUMA node {}, {} IRQs on CPUs {}",
            nic.name,
            or_unknown(&nic.bus_id),
            or_unknown(&nic.driver),
            or_unknown(&nic.numa_node),
            nic.irqs.len(),
            if nic.irq_cpus().is_empty() {
                "unknown".into()
            } else {
                cpulist::format(&nic.irq_cpus())
            }
        );
    }
    let virtual_nics: Vec<&str> = host
        .nics
        .iter()
        .filter(|n| !n.physical)
        .map(|n| n.name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "  virtual NICs    {}",
        if virtual_nics.is_empty() {
            "none".into()
        } else {
            virtual_nics.join(", ")
        }
    );
    for d in &host.disks {
        let _ = writeln!(
            s,
            "  disk {:<10} {}, scheduler {}, nr_requests {}, logical block {}",
            d.name,
            match d.rotational {
                Some(true) => "rotational",
                Some(false) => "non-rotational",
                None => "rotational unknown",
            },
            or_unknown(&d.scheduler),
            or_unknown(&d.nr_requests),
            or_unknown(&d.logical_block_size)
        );
    }
    if let Some(dd) = &host.data_dir {
        match &dd.mount {
            Some(m) => {
                let _ = writeln!(
                    s,
                    "  data_dir        {}: {} on {} at {} ({}; {})",
                    dd.path.display(),
                    m.fstype,
                    m.source,
                    m.mount_point,
                    m.mount_options.join(","),
                    m.super_options.join(",")
                );
            }
            None => {
                let _ = writeln!(s, "  data_dir        {}: mount unknown", dd.path.display());
            }
        }
        if let Some(j) = dd.ext4_journal {
            let _ = writeln!(s, "  ext4 journal    {}", if j { "yes" } else { "no" });
        }
        let _ = writeln!(
            s,
            "  data disk       {}, {} IRQs, taken on CPUs {}",
            or_unknown(&dd.disk),
            dd.irqs.len(),
            if dd.irq_cpus.is_empty() {
                "unknown".into()
            } else {
                cpulist::format(&dd.irq_cpus)
            }
        );
    }
    let k = &host.kernel;
    let _ = writeln!(
        s,
        "  THP             enabled {}, defrag {}",
        or_unknown(&k.thp_enabled),
        or_unknown(&k.thp_defrag)
    );
    let probe = match &k.io_uring_probe {
        None => "not probed".to_string(),
        Some(crate::kernel::Probe::Ok) => "io_uring_setup works".to_string(),
        Some(crate::kernel::Probe::Failed { name, errno }) => {
            format!("io_uring_setup failed: {name} ({errno})")
        }
    };
    let _ = writeln!(
        s,
        "  io_uring        io_uring_disabled {}, {probe}",
        or_unknown(&k.io_uring_disabled)
    );
    let _ = writeln!(s, "  memlock limit   {}", or_unknown(&k.memlock));
    let _ = writeln!(
        s,
        "  governor        {} (driver {})",
        if k.governors.is_empty() {
            "unknown".into()
        } else {
            crate::kernel::governors_text(&k.governors)
        },
        or_unknown(&k.cpufreq_driver)
    );
    let _ = writeln!(s);
    if findings.is_empty() {
        let _ = writeln!(s, "Findings: none");
    } else {
        let _ = writeln!(s, "Findings ({}):", findings.len());
    }
    for f in findings {
        let _ = writeln!(s, "\n[{}] {} ({})", f.severity.label(), f.title, f.id);
        let _ = writeln!(s, "    why: {}", f.why);
        if let Some(fix) = &f.fix {
            let _ = writeln!(s, "    fix: {fix}");
        }
    }
    s
}

#[derive(Serialize)]
struct ReportJson<'a> {
    host: &'a Host,
    findings: &'a [Finding],
}

pub fn report_json(host: &Host, findings: &[Finding]) -> String {
    serde_json::to_string_pretty(&ReportJson { host, findings })
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn plan_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The plan as a TOML snippet the broker reads with `--config` (only the `cpu_list`
/// key; everything else is comments).
pub fn plan_toml(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Shard placement by spate-tune: {} shard(s).",
        plan.shards.len()
    );
    let _ = writeln!(
        s,
        "# Use: spate --config THIS_FILE   (or: spate --cpu-list {})",
        if plan.cpu_list.is_empty() {
            "<none>".into()
        } else {
            cpulist::format(&plan.cpu_list)
        }
    );
    for k in &plan.reserved {
        let _ = writeln!(
            s,
            "# reserved: CPUs {} (NUMA node {}): {}",
            cpulist::format(&k.cpus),
            or_unknown(&k.node),
            k.reason
        );
    }
    for k in &plan.unused {
        let _ = writeln!(
            s,
            "# no shard: CPUs {} (NUMA node {}): {}",
            cpulist::format(&k.cpus),
            or_unknown(&k.node),
            k.reason
        );
    }
    for n in &plan.notes {
        let _ = writeln!(s, "# note: {n}");
    }
    if !plan.irq_moves.is_empty() {
        let _ = writeln!(s, "# NIC interrupts currently allowed on shard CPUs; move them (as root, with irqbalance stopped or told to skip them):");
        for m in &plan.irq_moves {
            let _ = writeln!(
                s,
                "#   echo {} > /proc/irq/{}/smp_affinity_list   # {}, now {}",
                cpulist::format(&m.to),
                m.irq,
                m.nic,
                cpulist::format(&m.from)
            );
        }
    }
    if plan.shards.is_empty() {
        let _ = writeln!(s, "cpu_list = []");
        return s;
    }
    let _ = writeln!(s, "cpu_list = [");
    let width = plan
        .cpu_list
        .iter()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(1)
        + 1;
    for sh in &plan.shards {
        let mut comment = format!("shard {}: CPU {}", sh.index, sh.cpu);
        if let Some(core) = sh.core_id {
            let _ = write!(comment, ", core {core}");
        }
        if let Some(p) = sh.package {
            let _ = write!(comment, " of package {p}");
        }
        let _ = write!(comment, ", NUMA node {}", or_unknown(&sh.node));
        if !sh.local_nics.is_empty() {
            let _ = write!(comment, ", NIC-local ({})", sh.local_nics.join(", "));
        }
        if sh.isolated {
            comment.push_str(", isolated");
        }
        if !sh.idle_siblings.is_empty() {
            let _ = write!(
                comment,
                ", SMT sibling {} idle",
                cpulist::format(&sh.idle_siblings)
            );
        }
        let _ = writeln!(s, "  {:<width$} # {comment}", format!("{},", sh.cpu));
    }
    let _ = writeln!(s, "]");
    s
}
