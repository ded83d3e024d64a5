//! The attachment store in a local directory.
//!
//! An upload goes to a hidden temporary file beside its final path, is
//! synced, then renamed over the final path, so a reader sees either no
//! object or the whole object, also after a crash.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::fs::File;
use tokio::io::AsyncWriteExt;

use super::{AttachmentStore, Upload};

/// Keeps objects as files under a root directory.
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
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
        let parent = path.parent().expect("a joined key has a parent: the root");
        tokio::fs::create_dir_all(parent).await?;
        let name = path
            .file_name()
            .expect("a checked key ends with a name")
            .to_string_lossy();
        let temporary = parent.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let file = File::create(&temporary).await?;
        Ok(Box::new(LocalUpload {
            file,
            temporary,
            path,
            committed: false,
        }))
    }
}

struct LocalUpload {
    file: File,
    temporary: PathBuf,
    path: PathBuf,
    committed: bool,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.file.write_all(chunk).await
    }

    async fn commit(mut self: Box<Self>) -> std::io::Result<()> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        tokio::fs::rename(&self.temporary, &self.path).await?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.committed {
            remove_quietly(&self.temporary);
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

    #[tokio::test]
    async fn committed_upload_appears_whole_under_its_key() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(root.path().to_owned());
        let mut upload = store.begin("team/task/attachment").await.unwrap();
        upload.write(b"hello ").await.unwrap();
        assert_eq!(
            files_under(root.path()).len(),
            1,
            "only the temporary file exists"
        );
        assert!(!root.path().join("team/task/attachment").exists());
        upload.write(b"world").await.unwrap();
        upload.commit().await.unwrap();
        assert_eq!(files_under(root.path()), ["team/task/attachment"]);
        let content = std::fs::read(root.path().join("team/task/attachment")).unwrap();
        assert_eq!(content, b"hello world");
    }

    #[tokio::test]
    async fn dropped_upload_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(root.path().to_owned());
        let mut upload = store.begin("a/b").await.unwrap();
        upload.write(b"partial").await.unwrap();
        drop(upload);
        assert!(files_under(root.path()).is_empty());
    }

    #[tokio::test]
    async fn keys_that_leave_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(root.path().to_owned());
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
