//! spate-tune: host report and shard placement plan for the Spate broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use spate_tune::{output, Host, Options, Roots};

#[derive(Parser, Debug)]
#[command(
    name = "spate-tune",
    version,
    about = "Inspect a host for Spate and plan shard placement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What on this host would hurt a thread-per-core broker, with severities.
    Report {
        #[command(flatten)]
        roots: RootArgs,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Also check the shard CPUs the broker runs with, e.g. "0-7" (its --cpu-list).
        #[arg(long, value_name = "LIST")]
        cpu_list: Option<String>,
        /// Also check the broker's data directory: its file system, mount options and
        /// the disk's interrupts.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Shard placement as a config snippet (`cpu_list`) for `spate --config`.
    Plan {
        #[command(flatten)]
        roots: RootArgs,
        #[arg(long, value_enum, default_value_t = PlanFormat::Toml)]
        format: PlanFormat,
        /// Number of shards (default: one per eligible physical core).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        shards: Option<u32>,
        /// Cores reserved per NUMA node for NIC interrupts and the OS.
        #[arg(long, default_value_t = 1)]
        irq_cores: usize,
        /// Run shards on SMT siblings too (every thread of the chosen cores).
        #[arg(long)]
        allow_smt: bool,
        /// Keep shards off isolated CPUs (when they are isolated for another program).
        #[arg(long)]
        avoid_isolated: bool,
        /// Plan for this NUMA node only (one broker, and listener, per node).
        #[arg(long)]
        numa_node: Option<u32>,
    },
}

#[derive(Args, Debug)]
struct RootArgs {
    /// Directory holding the `sys/` tree to read (default: / , the live host).
    #[arg(long, value_name = "DIR")]
    sysfs_root: Option<PathBuf>,
    /// Directory holding the `proc/` tree to read (default: / , the live host).
    #[arg(long, value_name = "DIR")]
    procfs_root: Option<PathBuf>,
    /// Shorthand for --sysfs-root DIR --procfs-root DIR.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["sysfs_root", "procfs_root"])]
    root: Option<PathBuf>,
}

impl RootArgs {
    /// No root given: the live host, with live probes. Any root given: only that
    /// recorded tree is read (a missing one defaults to the given one, never to /).
    fn roots(&self) -> Roots {
        let sys = self.sysfs_root.clone().or_else(|| self.root.clone());
        let proc = self.procfs_root.clone().or_else(|| self.root.clone());
        match (sys, proc) {
            (None, None) => Roots::live(),
            (Some(s), None) => Roots::recorded(s.clone(), s),
            (None, Some(p)) => Roots::recorded(p.clone(), p),
            (Some(s), Some(p)) => Roots::recorded(s, p),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    Toml,
    Json,
}

/// Write to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Report {
            roots,
            format,
            cpu_list,
            data_dir,
        } => {
            let roots = roots.roots();
            let mut host = Host::read(&roots);
            let mut findings = spate_tune::check(&host);
            let mut shard_cpus = None;
            if let Some(list) = cpu_list {
                let cpus = spate_tune::cpulist::parse(&list);
                if cpus.is_empty() {
                    eprintln!("spate-tune: --cpu-list {list:?} names no CPU");
                    return ExitCode::from(2);
                }
                findings.extend(spate_tune::shardcheck::check(&host, &cpus));
                shard_cpus = Some(cpus);
            }
            if let Some(dir) = data_dir {
                let dd = spate_tune::datadir::read(&roots, &dir);
                findings.extend(spate_tune::datadir::check(
                    &dd,
                    shard_cpus.as_deref(),
                    &host.topology.online,
                ));
                host.data_dir = Some(dd);
            }
            findings.sort_by_key(|f| f.severity);
            match format {
                ReportFormat::Text => emit(&output::report_text(&host, &findings)),
                ReportFormat::Json => emit(&(output::report_json(&host, &findings) + "\n")),
            }
        }
        Command::Plan {
            roots,
            format,
            shards,
            irq_cores,
            allow_smt,
            avoid_isolated,
            numa_node,
        } => {
            let host = Host::read(&roots.roots());
            let opts = Options {
                shards: shards.map(|n| n as usize),
                irq_cores,
                allow_smt,
                avoid_isolated,
                numa_node,
            };
            let plan = spate_tune::plan(&host, &opts);
            match format {
                PlanFormat::Toml => emit(&output::plan_toml(&plan)),
                PlanFormat::Json => emit(&(output::plan_json(&plan) + "\n")),
            }
            if plan.shards.is_empty() {
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
