//! The attachment store in a local directory.
//!
//! An upload goes to a file without a name in its final directory, is
//! synced, then linked under its final path, and the directory is synced, so
//! a reader sees either no object or the whole object, also after a crash,
//! and a committed object survives one. Commits into one directory at once
//! share its syncs (see [`super::directory_sync`]). Where the file system
//! cannot create files without a name, an upload goes to a hidden temporary
//! file instead, renamed over the final path at commit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::directory_sync::DirectorySyncs;
use super::unnamed;
use super::{AttachmentStore, Upload};

/// Keeps objects as files under a root directory.
pub struct LocalDirStore {
    root: PathBuf,
    syncs: Arc<DirectorySyncs>,
    /// Whether uploads start as files without a name; see [`Staging`].
    unnamed: bool,
}

impl LocalDirStore {
    /// Opens the store at `root`, creating the directory, durably, if it is
    /// missing. Uploads start as files without a name where the file system
    /// allows it, and as named temporary files where it does not. Fails when
    /// no file can be created in `root`.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let syncs = DirectorySyncs::default();
        syncs.create_dir_all(&root)?;
        let unnamed = match unnamed::probe(&root) {
            Ok(()) => true,
            Err(error) => {
                // A directory that takes no file at all is a configuration
                // error, reported by the caller.
                probe_named(&root)?;
                tracing::warn!(
                    %error,
                    store_dir = %root.display(),
                    "cannot create unnamed files in the attachment store; uploads use named temporary files"
                );
                false
            }
        };
        Ok(Self {
            root,
            syncs: Arc::new(syncs),
            unnamed,
        })
    }

    #[cfg(test)]
    fn with_staging(root: PathBuf, unnamed: bool, syncs: DirectorySyncs) -> Self {
        Self {
            root,
            syncs: Arc::new(syncs),
            unnamed,
        }
    }

    /// Tells whether uploads start as files without a name.
    #[cfg(test)]
    fn stages_unnamed(&self) -> bool {
        self.unnamed
    }

    /// Deletes temporary files older than `max_age`, which uploads of a
    /// killed worker leave behind. Younger ones may belong to a running
    /// upload of another worker that shares the directory. Returns how many
    /// files were deleted.
    pub fn sweep_abandoned(&self, max_age: std::time::Duration) -> usize {
        let mut deleted = 0;
        let mut directories = vec![self.root.clone()];
        while let Some(directory) = directories.pop() {
            let Ok(entries) = std::fs::read_dir(&directory) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                if metadata.is_dir() {
                    directories.push(path);
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let old = metadata
                    .modified()
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .is_some_and(|age| age > max_age);
                let abandoned = name.starts_with('.') && name.ends_with(".tmp") && old;
                if abandoned && std::fs::remove_file(&path).is_ok() {
                    deleted += 1;
                }
            }
        }
        deleted
    }

    /// The file an object's key maps to. Keys are built from ids by the
    /// worker, never from customer input, but a key that could leave the
    /// root is refused all the same.
    fn path_of(&self, key: &str) -> std::io::Result<PathBuf> {
        let safe = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty() && part != "." && part != ".." && !part.starts_with('.')
            });
        if !safe {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("storage key `{key}` is not a relative path of plain names"),
            ));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl AttachmentStore for LocalDirStore {
    async fn begin(&self, key: &str) -> std::io::Result<Box<dyn Upload>> {
        let path = self.path_of(key)?;
        let parent = path
            .parent()
            .expect("a joined key has a parent: the root")
            .to_owned();
        let staging = if self.unnamed {
            Staging::Unnamed
        } else {
            Staging::Named(temporary_beside(&path))
        };
        Ok(Box::new(LocalUpload {
            syncs: self.syncs.clone(),
            parent,
            staging,
            path,
            file: None,
            buffer: Vec::new(),
            committed: false,
        }))
    }
}

/// Creates and deletes a named temporary file in `root`.
fn probe_named(root: &Path) -> std::io::Result<()> {
    let probe = temporary_beside(&root.join("probe"));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// Returns a hidden temporary name beside `path`, unique to one upload. The sweep
/// recognises such names by their leading dot and `.tmp` ending.
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .expect("a checked key ends with a name")
        .to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

/// The place of an upload's file until its commit gives it the final name.
#[derive(Clone)]
enum Staging {
    /// A file without a name in the final directory (`O_TMPFILE`), linked
    /// under the final path at commit. This saves the temporary name and
    /// the rename, and the file vanishes with its worker.
    Unnamed,
    /// A hidden file beside the final path, renamed over it at commit.
    Named(PathBuf),
}

/// Bytes an upload collects before it writes them to its file.
const BUFFER_BYTES: usize = 64 * 1024;

/// An upload in progress. The file operations run on tokio's blocking
/// threads, and each hand-off to one costs two thread switches. So writes are
/// collected up to [`BUFFER_BYTES`], the file is created by the first
/// write, and an object smaller than the buffer is created, written, synced
/// and named in a single hand-off at commit.
struct LocalUpload {
    syncs: Arc<DirectorySyncs>,
    parent: PathBuf,
    staging: Staging,
    path: PathBuf,
    /// The temporary file, once created. It is `None` while a write runs.
    file: Option<std::fs::File>,
    buffer: Vec<u8>,
    committed: bool,
}

impl LocalUpload {
    /// Runs `operation` on a blocking thread with the temporary file and the
    /// buffered bytes. The first call creates the file and its directory.
    async fn with_file<T: Send + 'static>(
        &mut self,
        operation: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let file = self.file.take();
        let buffer = std::mem::take(&mut self.buffer);
        let parent = self.parent.clone();
        let staging = self.staging.clone();
        let syncs = self.syncs.clone();
        let (file, mut buffer, result) = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => match create(&syncs, &parent, &staging) {
                    Ok(file) => file,
                    Err(error) => return (None, buffer, Err(error)),
                },
            };
            let result = operation(&mut file, &buffer);
            (Some(file), buffer, result)
        })
        .await
        .map_err(std::io::Error::other)?;
        buffer.clear();
        self.file = file;
        self.buffer = buffer;
        result
    }
}

/// Creates the upload's file, and the missing directories above it, each
/// durable in its parent (see [`DirectorySyncs::create_dir_all`]).
fn create(
    syncs: &DirectorySyncs,
    parent: &Path,
    staging: &Staging,
) -> std::io::Result<std::fs::File> {
    syncs.create_dir_all(parent)?;
    match staging {
        Staging::Unnamed => unnamed::create(parent),
        Staging::Named(temporary) => std::fs::File::create(temporary),
    }
}

/// Gives a synced file its final name, replacing any object there.
fn publish(file: &std::fs::File, staging: &Staging, path: &Path) -> std::io::Result<()> {
    match staging {
        Staging::Named(temporary) => std::fs::rename(temporary, path),
        Staging::Unnamed => match unnamed::link(file, path) {
            // An earlier attempt committed this key. A link cannot replace
            // a file, so the file takes a temporary name and a rename
            // replaces the object whole.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let temporary = temporary_beside(path);
                unnamed::link(file, &temporary)?;
                std::fs::rename(&temporary, path).inspect_err(|_| remove_quietly(&temporary))
            }
            linked => linked,
        },
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.buffer.len() + chunk.len() <= BUFFER_BYTES {
            self.buffer.extend_from_slice(chunk);
            return Ok(());
        }
        self.buffer.extend_from_slice(chunk);
        self.with_file(|file, buffer| file.write_all(buffer)).await
    }

    async fn commit(mut self: Box<Self>) -> std::io::Result<()> {
        let parent = self.parent.clone();
        let staging = self.staging.clone();
        let path = self.path.clone();
        let syncs = self.syncs.clone();
        self.with_file(move |file, buffer| {
            file.write_all(buffer)?;
            file.sync_all()?;
            publish(file, &staging, &path)?;
            // The new name is durable only once the directory is synced.
            syncs.sync_after_change(&parent)
        })
        .await?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // The file may exist even when `file` is `None`: a write cancelled
        // while on a blocking thread has created it. A file without a name
        // is gone once closed.
        if let (false, Staging::Named(temporary)) = (self.committed, &self.staging) {
            remove_quietly(temporary);
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, path = %path.display(), "cannot remove an abandoned upload");
    }
}

#[cfg(test)]
mod tests {
    use super::super::directory_sync::fsync_directory;
    use super::*;

    fn files_under(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for entry in walk(root) {
            found.push(entry.strip_prefix(root).unwrap().display().to_string());
        }
        found.sort();
        found
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                paths.extend(walk(&path));
            } else {
                paths.push(path);
            }
        }
        paths
    }

    /// Returns a store of each staging, unnamed first, each in a new
    /// directory.
    fn stores() -> Vec<(tempfile::TempDir, LocalDirStore)> {
        stores_syncing_with(fsync_directory)
    }

    /// Returns the stores of [`stores`], whose directory syncs call `sync`.
    fn stores_syncing_with(
        sync: fn(&Path) -> std::io::Result<()>,
    ) -> Vec<(tempfile::TempDir, LocalDirStore)> {
        [true, false]
            .into_iter()
            .map(|unnamed| {
                let root = tempfile::tempdir().unwrap();
                let syncs = DirectorySyncs::with_sync(sync);
                let store = LocalDirStore::with_staging(root.path().to_owned(), unnamed, syncs);
                (root, store)
            })
            .collect()
    }

    /// Directory syncs of [`synced_directory_holds_the_object`], each with
    /// the names the directory held when it was synced.
    static SYNCED: std::sync::Mutex<Vec<(PathBuf, Vec<String>)>> =
        std::sync::Mutex::new(Vec::new());

    #[tokio::test]
    async fn synced_directory_holds_the_object() {
        fn record(directory: &Path) -> std::io::Result<()> {
            let names = std::fs::read_dir(directory)?
                .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()?;
            SYNCED.lock().unwrap().push((directory.to_owned(), names));
            fsync_directory(directory)
        }

        for (root, store) in stores_syncing_with(record) {
            let mut upload = store.begin("team/task/object").await.unwrap();
            upload.write(b"synced").await.unwrap();
            upload.commit().await.unwrap();

            let synced = SYNCED.lock().unwrap().clone();
            let directory = root.path().join("team/task");
            let after_link = synced
                .iter()
                .any(|(synced, names)| *synced == directory && names == &["object"]);
            assert!(after_link, "{synced:?}");
            let task_entry = synced
                .iter()
                .any(|(synced, names)| synced == &root.path().join("team") && names == &["task"]);
            assert!(task_entry, "{synced:?}");
        }
    }

    #[tokio::test]
    async fn upload_has_the_mode_of_a_created_file() {
        use std::os::unix::fs::PermissionsExt;

        for (root, store) in stores() {
            let mut upload = store.begin("team/object").await.unwrap();
            upload.write(b"mode").await.unwrap();
            upload.commit().await.unwrap();
            let created = root.path().join("team/created");
            std::fs::File::create(&created).unwrap();

            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode(&root.path().join("team/object")), mode(&created));
        }
    }

    #[test]
    fn open_fails_under_a_file() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();

        let error = LocalDirStore::open(file.join("attachments")).err();
        assert_eq!(
            error.map(|error| error.kind()),
            Some(std::io::ErrorKind::NotADirectory)
        );
    }

    #[test]
    fn open_finds_unnamed_files_work() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(root.path().join("new/attachments")).unwrap();
        // The tests' temporary directory is on a Linux file system that has
        // O_TMPFILE, as the deployments' volumes are.
        assert!(store.stages_unnamed());
        assert!(
            files_under(root.path()).is_empty(),
            "the probe leaves nothing"
        );
    }

    #[tokio::test]
    async fn committed_upload_appears_whole_under_its_key() {
        for (root, store) in stores() {
            let mut upload = store.begin("team/task/attachment").await.unwrap();
            upload.write(b"hello ").await.unwrap();
            assert!(
                files_under(root.path()).is_empty(),
                "a small write stays in the buffer"
            );
            let large = vec![b'x'; BUFFER_BYTES];
            upload.write(&large).await.unwrap();
            let visible = if store.stages_unnamed() { 0 } else { 1 };
            assert_eq!(
                files_under(root.path()).len(),
                visible,
                "at most the temporary file is visible"
            );
            assert!(!root.path().join("team/task/attachment").exists());
            upload.write(b"world").await.unwrap();
            upload.commit().await.unwrap();
            assert_eq!(files_under(root.path()), ["team/task/attachment"]);
            let content = std::fs::read(root.path().join("team/task/attachment")).unwrap();
            assert_eq!(content, [b"hello ".as_slice(), &large, b"world"].concat());
        }
    }

    #[tokio::test]
    async fn small_upload_is_written_at_commit() {
        for (root, store) in stores() {
            let mut upload = store.begin("team/task/small").await.unwrap();
            upload.write(b"tiny").await.unwrap();
            upload.commit().await.unwrap();
            assert_eq!(files_under(root.path()), ["team/task/small"]);
            let content = std::fs::read(root.path().join("team/task/small")).unwrap();
            assert_eq!(content, b"tiny");
        }
    }

    #[tokio::test]
    async fn second_commit_replaces_the_object() {
        for (root, store) in stores() {
            for (content, size) in [(b'1', 7), (b'2', BUFFER_BYTES + 1), (b'3', 5)] {
                let mut upload = store.begin("team/task/again").await.unwrap();
                upload.write(&vec![content; size]).await.unwrap();
                upload.commit().await.unwrap();
                assert_eq!(files_under(root.path()), ["team/task/again"]);
                let stored = std::fs::read(root.path().join("team/task/again")).unwrap();
                assert_eq!(stored, vec![content; size]);
            }
        }
    }

    #[tokio::test]
    async fn dropped_upload_leaves_nothing() {
        for (root, store) in stores() {
            for size in [7, BUFFER_BYTES + 1] {
                let mut upload = store.begin("a/b").await.unwrap();
                upload.write(&vec![b'p'; size]).await.unwrap();
                drop(upload);
                assert!(files_under(root.path()).is_empty(), "{size} bytes");
            }
        }
    }

    #[tokio::test]
    async fn upload_of_a_killed_worker_is_swept_or_never_named() {
        for (root, store) in stores() {
            let mut committed = store.begin("t/a").await.unwrap();
            committed.write(b"kept").await.unwrap();
            committed.commit().await.unwrap();
            let mut abandoned = store.begin("t/b").await.unwrap();
            abandoned
                .write(&vec![b'a'; BUFFER_BYTES + 1])
                .await
                .unwrap();
            // A killed worker never drops its upload.
            std::mem::forget(abandoned);
            if store.stages_unnamed() {
                assert_eq!(files_under(root.path()), ["t/a"]);
                continue;
            }

            assert_eq!(
                store.sweep_abandoned(std::time::Duration::from_secs(3600)),
                0
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!(
                store.sweep_abandoned(std::time::Duration::from_millis(10)),
                1
            );
            assert_eq!(files_under(root.path()), ["t/a"]);
        }
    }

    #[tokio::test]
    async fn keys_that_leave_the_root_are_refused() {
        for (_root, store) in stores() {
            for key in [
                "",
                "../x",
                "a/../../x",
                "/etc/passwd",
                "a//b",
                ".hidden",
                "a/./b",
            ] {
                let refused = store.begin(key).await.err().map(|e| e.kind());
                assert_eq!(refused, Some(std::io::ErrorKind::InvalidInput), "{key:?}");
            }
        }
    }
}
