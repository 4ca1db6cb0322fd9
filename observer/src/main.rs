fn main() -> std::process::ExitCode {
    observer::cli::main()
}
