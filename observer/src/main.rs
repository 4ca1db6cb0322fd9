//! `observer`: the agent (`observer run`) and its debug clients, one binary.

mod agent;
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
