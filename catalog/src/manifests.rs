//! Manifest lists and manifests as Floe reads them beyond iceberg's scan planner (column
//! statistics, deletion vectors, metadata tables): read in parallel and kept by path. Both are
//! immutable once written, so a path always names the same content and nothing needs
//! invalidating; the cache only bounds how much it holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};

use futures::{StreamExt, TryStreamExt};
use iceberg::spec::{Manifest, ManifestFile, ManifestList, SnapshotRef};
use iceberg::table::Table;

/// How many manifest entries (data and delete files) the cache holds at most, over all
/// tables (about 1 KiB each with column bounds).
const MAX_ENTRIES: usize = 400_000;
/// How many manifests are read at once.
const PARALLEL_READS: usize = 16;

/// What was read, by path, oldest first for eviction.
#[derive(Default)]
struct Cache {
    lists: HashMap<String, Arc<ManifestList>>,
    manifests: HashMap<String, Arc<Manifest>>,
    order: VecDeque<(String, usize)>,
    entries: usize,
}

impl Cache {
    fn admit(&mut self, path: String, weight: usize) {
        self.order.push_back((path, weight));
        self.entries += weight;
        while self.entries > MAX_ENTRIES {
            let Some((old, weight)) = self.order.pop_front() else {
                break;
            };
            self.entries -= weight;
            self.lists.remove(&old);
            self.manifests.remove(&old);
        }
    }
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The manifest list of `snapshot`.
pub async fn manifest_list(
    table: &Table,
    snapshot: &SnapshotRef,
) -> iceberg::Result<Arc<ManifestList>> {
    let path = snapshot.manifest_list().to_string();
    if let Some(list) = cache().lists.get(&path) {
        return Ok(Arc::clone(list));
    }
    let list = Arc::new(table.manifest_list_reader(snapshot).load().await?);
    let mut cache = cache();
    if cache
        .lists
        .insert(path.clone(), Arc::clone(&list))
        .is_none()
    {
        cache.admit(path, list.entries().len().max(1));
    }
    Ok(list)
}

/// Whether every manifest `files` name is cached.
pub fn all_cached(files: &[&ManifestFile]) -> bool {
    let cache = cache();
    files
        .iter()
        .all(|f| cache.manifests.contains_key(&f.manifest_path))
}

/// The manifests `files` name, in their order, read in parallel where not cached.
pub async fn manifests(
    table: &Table,
    files: &[&ManifestFile],
) -> iceberg::Result<Vec<Arc<Manifest>>> {
    let reads: Vec<_> = files
        .iter()
        .map(|file| load(table.file_io().clone(), (*file).clone()))
        .collect();
    futures::stream::iter(reads)
        .buffered(PARALLEL_READS)
        .try_collect()
        .await
}

async fn load(file_io: iceberg::io::FileIO, file: ManifestFile) -> iceberg::Result<Arc<Manifest>> {
    if let Some(m) = cache().manifests.get(&file.manifest_path) {
        return Ok(Arc::clone(m));
    }
    let manifest = Arc::new(file.load_manifest(&file_io).await?);
    let mut cache = cache();
    let new = cache
        .manifests
        .insert(file.manifest_path.clone(), Arc::clone(&manifest))
        .is_none();
    if new {
        cache.admit(file.manifest_path, manifest.entries().len().max(1));
    }
    Ok(manifest)
}
