//! A distribution kernel's modules (virtio drivers, virtio-fs), loaded from the initramfs before
//! the agent looks for its port or mounts a share. The host put them there in dependency order
//! (`moat_vm::assets`), so no module tooling is needed in the guest. They go before
//! `switch_root`, which hides the initramfs; each file is removed once loaded (its memory is the
//! guest's, and the module's own copy is in the kernel by then).

use std::path::Path;

use super::{io, AgentError};

/// The file naming the modules in load order (as `moat_vm::assets::MODULES_ORDER`).
const ORDER: &str = "/modules/order";

/// Loads every module [`ORDER`] names; nothing to do for the minimal kernel (no such file).
pub(super) fn load() -> Result<(), AgentError> {
    let order = Path::new(ORDER);
    let list = match std::fs::read_to_string(order) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read", order)(e)),
    };
    let dir = order.parent().unwrap_or(Path::new("/"));
    for name in list.lines().filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(io("open", &path))?;
        match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
            // Already there (loaded as another's dependency by the kernel itself).
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(source) => {
                return Err(AgentError::Module {
                    module: name.to_string(),
                    source,
                })
            }
        }
        drop(file);
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}
