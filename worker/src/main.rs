//! The `shoal-worker` binary; everything it does is in [`shoal_worker::cli`].

// A worker allocates and frees many small buffers per AWS call; glibc's malloc was an
// eighth of its CPU. Without transparent huge pages, which would add 7 MB of idle memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(shoal_worker::cli::main());
}
