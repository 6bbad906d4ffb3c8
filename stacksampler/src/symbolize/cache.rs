//! Process-wide cache of indexed files, keyed by file identity (device, inode, size, mtime), so a
//! binary mapped by many processes, or symbolized again in a long run, is read and indexed once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use super::{maps::FileKey, module::ModuleSymbolizer};

/// Files kept at most; the cache is cleared when it grows past this (rare: one entry per
/// distinct binary or library seen).
const MAX_ENTRIES: usize = 256;

type Map = HashMap<FileKey, Arc<ModuleSymbolizer>>;

fn cache() -> &'static Mutex<Map> {
    static CACHE: OnceLock<Mutex<Map>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The indexed file for `key`, built by `build` when absent (outside the lock, so slow builds
/// of different files do not wait on each other).
pub fn get_or_insert<E>(
    key: FileKey,
    build: impl FnOnce() -> Result<ModuleSymbolizer, E>,
) -> Result<Arc<ModuleSymbolizer>, E> {
    if let Some(hit) = lock().get(&key) {
        return Ok(hit.clone());
    }
    let module = Arc::new(build()?);
    let mut map = lock();
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    Ok(map.entry(key).or_insert(module).clone())
}

/// Drops every cached file (memory is freed once no symbolizer holds them).
pub fn clear() {
    lock().clear();
}

/// Number of cached files.
pub fn len() -> usize {
    lock().len()
}

fn lock() -> std::sync::MutexGuard<'static, Map> {
    cache().lock().unwrap_or_else(|e| e.into_inner())
}
