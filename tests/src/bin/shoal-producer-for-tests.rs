//! The `shoal-producer` binary, built in this package so that the process-level tests get
//! its path from Cargo (`CARGO_BIN_EXE_*` exists only for a package's own binaries). It is
//! the same entry point, `shoal_producer::cli::main`, and nothing else.

fn main() {
    std::process::exit(shoal_producer::cli::main());
}
