//! The `outlet-agent` binary: all of it lives in the library (see its
//! crate docs); this only hands over the exit code.

fn main() {
    std::process::exit(outlet_agent::cli::main());
}
