//! spate-bench: a load generator for Kafka-compatible brokers (Spate, Apache Kafka),
//! speaking the Kafka protocol with its own lean client. See docs/bench.md.

mod client;
mod config;
mod load;
mod payload;
mod rate;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use config::{Config, Knobs, Mode};

#[derive(Parser)]
#[command(
    name = "spate-bench",
    version,
    about = "Load generator for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce as fast as possible (peak) or at --rate; latency = produce acknowledgement.
    Produce(Common),
    /// Read the topic(s) from the start to the end offsets seen at start (or --duration).
    Consume(Common),
    /// Produce and consume together; latency from publish to receipt.
    E2e(Common),
    /// Run a workload file; its `mode` picks produce, consume or e2e (default produce).
    Run(Common),
}

#[derive(clap::Args)]
struct Common {
    /// Broker address HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write latency and throughput charts as SVG here (default: the --json path with .svg).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// TOML workload file; flags given here override its values.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    knobs: Knobs,
}

fn run(mode: Mode, c: Common) -> Result<bool, String> {
    let file = match &c.workload {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            config::parse_workload(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Knobs::default(),
    };
    let cfg = Config::resolve(mode, c.knobs.or(file))?;
    let result = load::run(&cfg, &c.bootstrap, c.quiet)?;
    print!("{}", report::summary_text(&cfg, &result));
    let json = report::to_json(&cfg, &c.bootstrap, &result);
    if let Some(path) = &c.json {
        let text = serde_json::to_string_pretty(&json).map_err(|e| format!("json: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let svg_path = c
        .svg
        .clone()
        .or_else(|| c.json.as_ref().map(|p| p.with_extension("svg")));
    if let Some(path) = svg_path {
        std::fs::write(&path, report::to_svg(&cfg, &result))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let worked = match cfg.mode {
        Mode::Consume => true,
        _ => result.produced_msgs > 0,
    };
    Ok(worked && result.errors == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An explicit subcommand wins over a workload file's `mode`; `run` takes the file's.
    let (mode, common) = match cli.cmd {
        Cmd::Produce(mut c) => {
            c.knobs.mode = Some(Mode::Produce);
            (Mode::Produce, c)
        }
        Cmd::Consume(mut c) => {
            c.knobs.mode = Some(Mode::Consume);
            (Mode::Consume, c)
        }
        Cmd::E2e(mut c) => {
            c.knobs.mode = Some(Mode::E2e);
            (Mode::E2e, c)
        }
        Cmd::Run(c) => (Mode::Produce, c),
    };
    match run(mode, common) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("spate-bench: finished with errors or without any acknowledged message");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("spate-bench: {e}");
            ExitCode::from(2)
        }
    }
}
