//! Directory syncs shared by the commits that wait for them at once.
//!
//! A rename or a new entry is durable only once its directory is synced, and
//! a task's attachments are committed into one directory at nearly the same
//! time. A sync that starts after a change has completed covers that change,
//! so the commits that queue behind a running sync share the next one instead
//! of syncing one after another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Syncs directories, one sync for the changes that wait for it together.
pub struct DirectorySyncs {
    directories: Mutex<HashMap<PathBuf, Arc<DirectoryState>>>,
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
        Self::with_sync(|directory| std::fs::File::open(directory)?.sync_all())
    }
}

impl DirectorySyncs {
    /// Creates the syncs with `sync` in place of `fsync` of the directory.
    fn with_sync(sync: fn(&Path) -> std::io::Result<()>) -> Self {
        Self {
            directories: Mutex::default(),
            sync,
        }
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

    fn lock_directories(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<DirectoryState>>> {
        self.directories
            .lock()
            .expect("no thread panics while it has the directory map locked")
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
