//! The `shoal-worker` binary; everything it does is in [`shoal_worker::cli`].

fn main() {
    std::process::exit(shoal_worker::cli::main());
}
