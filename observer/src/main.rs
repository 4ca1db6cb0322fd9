use clap::Parser;

/// observer: tells when a pod was reached straight on its pod IP from outside the cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print what the embedded eBPF object contains (programs and maps) and exit.
    Programs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Programs => {
            for p in observer_common::names::PROGRAMS {
                println!("program {p}");
            }
            println!("object {} bytes", observer::bpf::OBJECT.len());
            Ok(())
        }
    }
}
