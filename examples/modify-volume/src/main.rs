//! A worker binary running a kind of its own beside the built-ins: all of it is this `main`.

fn main() {
    std::process::exit(shoal_worker::cli::main_with(|registry, limiter| {
        registry.register(shoal_example_modify_volume::ModifyVolumeHandler {
            limiter: limiter.clone(),
        });
    }));
}
