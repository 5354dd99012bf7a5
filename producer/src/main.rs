//! The `shoal-producer` binary: hands over to [`shoal_producer::cli::main`].

fn main() {
    std::process::exit(shoal_producer::cli::main());
}
