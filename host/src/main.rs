//! The `cronwerk` binary; everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    cronwerk::cli::main()
}
