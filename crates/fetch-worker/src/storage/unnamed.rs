//! Files created without a name (`O_TMPFILE`) and linked under one later.
//!
//! Linux creates such a file in a directory without an entry, so no other
//! process sees it, and frees it when it is closed unlinked, also when its
//! process is killed. A link through `/proc/self/fd` gives it a name. Other
//! systems, and file systems without `O_TMPFILE`, report that it does not
//! work, and the store uses named temporary files there.

use std::path::Path;

/// Tells whether a file without a name can be created in `directory` and
/// linked under a name there. Leaves nothing behind.
pub fn works_in(directory: &Path) -> bool {
    let probe = directory.join(format!(".probe.{}.tmp", uuid::Uuid::new_v4().simple()));
    let linked = create(directory).and_then(|file| link(&file, &probe));
    if linked.is_ok() {
        // The sweep deletes the probe later should this fail.
        let _ = std::fs::remove_file(&probe);
    }
    linked.is_ok()
}

/// Creates a file without a name in `directory`, open for writing.
#[cfg(target_os = "linux")]
pub fn create(directory: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};

    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    // Read and write for all, less the umask, as `File::create` does.
    let mode = Mode::from_raw_mode(0o666);
    Ok(rustix::fs::open(directory, flags, mode)?.into())
}

/// Links `file`, created by [`create`], under `path`. Fails with
/// `AlreadyExists` when `path` exists.
#[cfg(target_os = "linux")]
pub fn link(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    use std::os::fd::AsRawFd;

    // Linking the descriptor itself needs a capability; following its
    // `/proc` entry needs none.
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(rustix::fs::linkat(
        CWD,
        source.as_str(),
        CWD,
        path,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

#[cfg(not(target_os = "linux"))]
pub fn create(_directory: &Path) -> std::io::Result<std::fs::File> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
pub fn link(_file: &std::fs::File, _path: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
