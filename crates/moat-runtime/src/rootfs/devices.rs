//! Device nodes and the standard /dev symlinks.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use rustix::fs::{FileType, Mode};

use super::{safe, RootfsError};

/// The devices every container gets (the OCI spec's list), unless the config overrides them.
pub fn default_devices() -> Vec<LinuxDevice> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| {
        let mut d = LinuxDevice::default();
        d.set_path(PathBuf::from(path));
        d.set_typ(LinuxDeviceType::C);
        d.set_major(major);
        d.set_minor(minor);
        d.set_file_mode(Some(0o666));
        d.set_uid(Some(0));
        d.set_gid(Some(0));
        d
    })
    .collect()
}

fn dev_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Device {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the devices inside the rootfs: mknod where we may, bind mounts of the host's nodes in
/// a user namespace (mknod is not permitted there).
pub fn create(root: &OwnedFd, devices: &[LinuxDevice], userns: bool) -> Result<(), RootfsError> {
    for d in devices {
        let path = d.path();
        if userns {
            let target = safe::create_file_in_root(root.as_fd(), path).map_err(dev_err(path))?;
            let t = safe::fd_path(&target);
            mount(Some(path), &t, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
                RootfsError::Mount {
                    what: path.display().to_string(),
                    target: path.clone(),
                    source: e,
                }
            })?;
            continue;
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().ok_or_else(|| RootfsError::Device {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?;
        let dir = safe::mkdir_all_in_root(root.as_fd(), parent).map_err(dev_err(path))?;
        let kind = match d.typ() {
            LinuxDeviceType::B => FileType::BlockDevice,
            LinuxDeviceType::C | LinuxDeviceType::U => FileType::CharacterDevice,
            LinuxDeviceType::P => FileType::Fifo,
            LinuxDeviceType::A => {
                return Err(RootfsError::Device {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "type 'a' is only valid in cgroup device rules",
                    ),
                })
            }
        };
        let dev = rustix::fs::makedev(d.major() as u32, d.minor() as u32);
        let mode = Mode::from_raw_mode(d.file_mode().unwrap_or(0o666) & 0o7777);
        match rustix::fs::mknodat(&dir, name, kind, mode, dev) {
            Ok(()) => {}
            // An image that ships the node already (a /dev that is not a tmpfs): keep it.
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(dev_err(path)(e.into())),
        }
        let uid = d.uid().map(rustix::fs::Uid::from_raw);
        let gid = d.gid().map(rustix::fs::Gid::from_raw);
        rustix::fs::chownat(&dir, name, uid, gid, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| dev_err(path)(e.into()))?;
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/ptmx and /dev/core, as every runtime provides them.
/// Best effort: an image whose /dev is read-only or already has them keeps what it has.
pub fn symlinks(root: &OwnedFd) {
    let Ok(dev) = safe::mkdir_all_in_root(root.as_fd(), Path::new("/dev")) else {
        return;
    };
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
        ("/proc/kcore", "core"),
    ] {
        let _ = rustix::fs::symlinkat(target, &dev, name);
    }
}
