//! `observer`: the agent (`observer run`) and its debug clients, one binary.

mod agent;
mod cli;
mod flows_cli;
mod plugin;

fn main() -> std::process::ExitCode {
    cli::main()
}
