//! Cranelift's per-function compile cache, kept on disk beside the component cache.
//!
//! The component cache (`UdfRuntime::compile`) is keyed by a component's whole content, so a
//! component it has never seen compiles from scratch. Python and JavaScript components are mostly
//! one interpreter: every componentize-py component carries the same CPython code and every
//! ComponentizeJS one the same SpiderMonkey code (tens of thousands of functions); only their
//! data (the initialised heap with the user's script) differs. Cranelift's incremental cache
//! stores each compiled function under a hash of its IR, so a second Python or JavaScript
//! component — another UDF, or a new version of one being hot-swapped — recompiles only the
//! functions that changed: seconds instead of a minute.
//!
//! One file per function, `<dir>/<first two hex digits>/<rest of the key>`, written whole via
//! rename, so concurrent compiles in several processes never see half an entry. Any I/O error
//! is a miss; a bad entry is refused by Cranelift and recompiled.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory of compiled functions, keyed by Cranelift's hash of each function.
#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
    /// Makes temporary file names unique within the process (the pid does it across processes).
    next_tmp: AtomicU64,
}

impl FunctionCache {
    /// A cache in `dir`, created on first insert. `dir` must be specific to one engine
    /// configuration and Wasmtime version: the caller puts that hash in its name.
    pub(crate) fn new(dir: PathBuf) -> FunctionCache {
        FunctionCache {
            dir,
            next_tmp: AtomicU64::new(0),
        }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let key = hex::encode(key);
        let (shard, rest) = key.split_at(2.min(key.len()));
        self.dir.join(shard).join(rest)
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        std::fs::read(self.path(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let Some(shard) = path.parent() else {
            return false;
        };
        let tmp = shard.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::create_dir_all(shard)
            .and_then(|_| std::fs::write(&tmp, &value))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = &written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(path = %path.display(), "cannot cache a compiled function: {e}");
        }
        written.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::FunctionCache;
    use wasmtime::CacheStore;

    #[test]
    fn an_inserted_entry_reads_back_and_an_unknown_key_misses() {
        let dir = std::env::temp_dir().join(format!("eddy-fn-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = FunctionCache::new(dir.clone());
        assert_eq!(cache.get(&[0xab, 0xcd, 0xef]), None);
        assert!(cache.insert(&[0xab, 0xcd, 0xef], b"compiled".to_vec()));
        assert_eq!(
            cache.get(&[0xab, 0xcd, 0xef]).as_deref(),
            Some(&b"compiled"[..])
        );
        assert!(dir.join("ab").join("cdef").is_file());
        assert_eq!(cache.get(&[0xab, 0xcd]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
