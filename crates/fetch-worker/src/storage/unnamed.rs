//! Files created without a name (`O_TMPFILE`) and linked under one later.
//!
//! Linux creates such a file in a directory without an entry, so no other
//! process can open it, and frees it when it is closed unlinked, also when
//! its process is killed. A link through `/proc/self/fd` gives it a name.
//! On other systems, and on file systems without `O_TMPFILE`, the probe
//! fails and the store uses named temporary files.

use std::path::Path;

/// Creates a file without a name in `directory` and links it under a name
/// there, then deletes it. Fails with the cause when either step fails.
pub fn probe(directory: &Path) -> std::io::Result<()> {
    let probe = directory.join(format!(".probe.{}.tmp", uuid::Uuid::new_v4().simple()));
    create(directory).and_then(|file| link(&file, &probe))?;
    // Should this fail, the sweep deletes the probe later.
    std::fs::remove_file(&probe)
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

    // Linking the descriptor itself needs a capability, while following
    // its `/proc` entry needs none.
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(CWD, source.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW).map_err(|error| {
        let error = std::io::Error::from(error);
        let message = format!(
            "cannot link the upload as {} through {source}: {error}",
            path.display()
        );
        std::io::Error::new(error.kind(), message)
    })
}

#[cfg(not(target_os = "linux"))]
pub fn create(_directory: &Path) -> std::io::Result<std::fs::File> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
pub fn link(_file: &std::fs::File, _path: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
