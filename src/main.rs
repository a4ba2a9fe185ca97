//! The `hypod` binary: everything is in [`hypod::cli`].

fn main() -> std::process::ExitCode {
    hypod::cli::main()
}
