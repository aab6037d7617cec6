//! The `calldrift` binary: everything lives in the library; this is the edge.
fn main() -> std::process::ExitCode {
    calldrift::cli::main()
}
