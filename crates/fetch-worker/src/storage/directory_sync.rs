//! Directory syncs shared by the commits that wait for them at once, and
//! directory creation that is durable before any file in it is committed.
//!
//! A rename or a new entry is durable only once its directory is synced, and
//! a task's attachments are committed into one directory at nearly the same
//! time. A sync that starts after a change has completed covers that change,
//! so the commits that queue behind a running sync share the next one instead
//! of syncing one after another.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Syncs directories, one sync for the changes that wait for it together.
pub struct DirectorySyncs {
    directories: Mutex<HashMap<PathBuf, Arc<DirectoryState>>>,
    /// Directories created here whose entry in the parent may not be
    /// synced yet.
    unsynced_entries: Mutex<HashSet<PathBuf>>,
    sync: fn(&Path) -> std::io::Result<()>,
}

/// The changes of one directory that commits are waiting on.
#[derive(Default)]
struct DirectoryState {
    /// Changes completed in the directory, counted after each completes.
    changes: AtomicU64,
    /// Changes that a finished sync covers. The lock also lets one thread
    /// at a time sync the directory.
    synced: Mutex<u64>,
}

impl Default for DirectorySyncs {
    fn default() -> Self {
        Self::with_sync(fsync_directory)
    }
}

/// Syncs `directory` itself, which makes its entries durable.
pub(super) fn fsync_directory(directory: &Path) -> std::io::Result<()> {
    std::fs::File::open(directory)?.sync_all()
}

impl DirectorySyncs {
    /// Creates the syncs with `sync` in place of `fsync` of the directory.
    pub(super) fn with_sync(sync: fn(&Path) -> std::io::Result<()>) -> Self {
        Self {
            directories: Mutex::default(),
            unsynced_entries: Mutex::default(),
            sync,
        }
    }

    /// Creates `directory` and its missing ancestors, and returns once each
    /// new entry is durable in its parent. A directory that another call
    /// has just created counts as missing until that call's sync is done,
    /// so a file committed into it never outlives its path in a crash.
    /// Blocks the thread.
    pub fn create_dir_all(&self, directory: &Path) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut unsynced = Vec::new();
        {
            let mut entries = self.lock_unsynced_entries();
            // A relative path's last ancestor is empty: the working directory.
            let ancestors = directory.ancestors().filter(|a| !a.as_os_str().is_empty());
            let mut found_existing = false;
            for ancestor in ancestors {
                found_existing = found_existing || ancestor.exists();
                if !found_existing {
                    missing.push(ancestor.to_owned());
                    entries.insert(ancestor.to_owned());
                } else if entries.is_empty() {
                    break;
                } else if entries.contains(ancestor) {
                    unsynced.push(ancestor.to_owned());
                }
            }
        }
        // The usual case: the directory exists and its entries are durable.
        if missing.is_empty() && unsynced.is_empty() {
            return Ok(());
        }

        let result = std::fs::create_dir_all(directory).and_then(|()| {
            // Parents first, from the root down.
            for entry in missing.iter().chain(&unsynced).rev() {
                self.sync_after_change(parent_of(entry))?;
            }
            Ok(())
        });

        let mut entries = self.lock_unsynced_entries();
        for created in &missing {
            entries.remove(created);
        }
        result
    }

    /// Makes a change that has completed in `directory` durable. Returns
    /// once a sync that started after the change has finished, either this
    /// call's own or one that another call ran meanwhile. Blocks the thread.
    pub fn sync_after_change(&self, directory: &Path) -> std::io::Result<()> {
        let state = self
            .lock_directories()
            .entry(directory.to_owned())
            .or_default()
            .clone();
        let change = state.changes.fetch_add(1, Ordering::SeqCst) + 1;
        let result = self.sync_through(directory, &state, change);

        // Forget the directory when no other call uses its state, so the
        // map does not grow with every task. A later call starts afresh and
        // syncs. The state is released under the map lock, so of two calls
        // that finish together, the second finds itself the last.
        let mut directories = self.lock_directories();
        drop(state);
        if directories
            .get(directory)
            .is_some_and(|state| Arc::strong_count(state) == 1)
        {
            directories.remove(directory);
        }
        result
    }

    fn sync_through(
        &self,
        directory: &Path,
        state: &DirectoryState,
        change: u64,
    ) -> std::io::Result<()> {
        let mut synced = state
            .synced
            .lock()
            .expect("no thread panics while it has a directory's sync lock");
        if *synced >= change {
            return Ok(());
        }
        // Every change counted so far completed before this sync starts.
        let covered = state.changes.load(Ordering::SeqCst);
        (self.sync)(directory)?;
        *synced = covered;
        Ok(())
    }

    fn lock_unsynced_entries(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.unsynced_entries
            .lock()
            .expect("no thread panics while it has the unsynced entries locked")
    }

    fn lock_directories(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<DirectoryState>>> {
        self.directories
            .lock()
            .expect("no thread panics while it has the directory map locked")
    }
}

/// Returns the directory that contains `path`'s entry: its parent, or the
/// working directory for a relative path of one component.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    static SYNCS: AtomicUsize = AtomicUsize::new(0);

    /// Counts a sync and takes long enough for other calls to queue behind
    /// it.
    fn slow_sync(_: &Path) -> std::io::Result<()> {
        SYNCS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    #[test]
    fn calls_during_a_sync_share_the_next() {
        let syncs = Arc::new(DirectorySyncs::with_sync(slow_sync));
        let directory = Path::new("/task");
        let first = {
            let syncs = syncs.clone();
            std::thread::spawn(move || syncs.sync_after_change(directory))
        };
        std::thread::sleep(Duration::from_millis(50));

        // Four changes complete while the first sync runs, so it does not
        // cover them; one more sync covers all four.
        let barrier = Arc::new(Barrier::new(4));
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let syncs = syncs.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    syncs.sync_after_change(directory)
                })
            })
            .collect();
        first.join().unwrap().unwrap();
        for call in waiting {
            call.join().unwrap().unwrap();
        }
        assert_eq!(SYNCS.load(Ordering::SeqCst), 2);
        assert!(
            syncs.lock_directories().is_empty(),
            "the finished directory is forgotten"
        );
    }

    static PARENT_SYNCS: AtomicUsize = AtomicUsize::new(0);

    fn slow_parent_sync(_: &Path) -> std::io::Result<()> {
        PARENT_SYNCS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    #[test]
    fn directory_in_creation_waits_for_parent_sync() {
        let root = tempfile::tempdir().unwrap();
        let task = root.path().join("team/task");
        let syncs = Arc::new(DirectorySyncs::with_sync(slow_parent_sync));
        let first = {
            let syncs = syncs.clone();
            let task = task.clone();
            std::thread::spawn(move || syncs.create_dir_all(&task))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(task.exists(), "the first call created the directories");

        // The directories exist, but the first call is still syncing their
        // entries, so the second call returns only after a sync.
        let started = std::time::Instant::now();
        syncs.create_dir_all(&task).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "returned after {:?}, before the entries were synced",
            started.elapsed()
        );
        first.join().unwrap().unwrap();
        assert!(syncs.lock_unsynced_entries().is_empty());
        assert!(PARENT_SYNCS.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn parent_of_relative_top_is_working_directory() {
        assert_eq!(parent_of(Path::new("data")), Path::new("."));
        assert_eq!(parent_of(Path::new("data/attachments")), Path::new("data"));
        assert_eq!(parent_of(Path::new("/srv/data")), Path::new("/srv"));
    }

    #[test]
    fn sync_reports_missing_directory() {
        let root = tempfile::tempdir().unwrap();
        let syncs = DirectorySyncs::default();
        syncs.sync_after_change(root.path()).unwrap();
        let missing = syncs.sync_after_change(&root.path().join("missing"));
        assert_eq!(
            missing.unwrap_err().kind(),
            std::io::ErrorKind::NotFound,
            "a failed sync is reported"
        );
    }
}
