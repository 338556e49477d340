//! The guest agent's binary: PID 1 of a VM container's initramfs.

fn main() {
    std::process::exit(moat_agent::guest::main());
}
