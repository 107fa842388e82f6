//! A watched directory of components: `NAME.wasm` (or `NAME.<anything>.wasm`, the newest one)
//! serves function `NAME`, loaded with `CREATE OR REPLACE FUNCTION` whenever its file changes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{Output, Session};

/// What a file looked like at one scan: a file is loaded once it stops changing.
type Stamp = (SystemTime, u64);

/// A directory whose components are kept loaded into a session.
#[derive(Debug)]
pub struct UdfDir {
    dir: PathBuf,
    /// The stamp each function's file had when it was last loaded (or refused).
    loaded: HashMap<String, (PathBuf, Stamp)>,
    /// Files seen changed at the previous scan, not yet loaded.
    pending: HashMap<PathBuf, Stamp>,
    started: bool,
}

/// A file [`UdfDir::due`] found new or changed: the statement that loads it.
#[derive(Debug)]
pub struct DueLoad {
    function: String,
    path: PathBuf,
    stamp: Stamp,
    sql: String,
}

impl DueLoad {
    /// `CREATE OR REPLACE FUNCTION name FROM 'path'`.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

/// One load attempted by [`UdfDir::load`].
#[derive(Debug)]
pub struct DirLoad {
    /// The function the file serves.
    pub function: String,
    /// The component file.
    pub path: PathBuf,
    /// The statement's message, or why the file was refused (the old version keeps serving).
    pub result: Result<String, String>,
}

impl UdfDir {
    /// Watches `dir`; nothing is read until the first [`UdfDir::sync`].
    pub fn new(dir: impl Into<PathBuf>) -> UdfDir {
        UdfDir {
            dir: dir.into(),
            loaded: HashMap::new(),
            pending: HashMap::new(),
            started: false,
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the components that are new or changed since the last call: [`UdfDir::due`],
    /// then [`UdfDir::load`].
    pub async fn sync(&mut self, session: &mut Session) -> Result<Vec<DirLoad>, std::io::Error> {
        let due = self.due()?;
        Ok(self.load(due, session).await)
    }

    /// The components that are new or changed since the last call, as `CREATE OR REPLACE
    /// FUNCTION` statements; reading the directory needs no session, so a server scans (and
    /// compiles, with [`Session::warm_up`]) without holding its engine.
    ///
    /// The first call takes every function's newest file at once. Later calls take a changed
    /// file only once it has kept its size and modification time since the previous call, so a
    /// file still being copied in is not read half-written: call this every second or so.
    /// A file that fails to load is retried only when it changes again; a deleted file changes
    /// nothing (`DROP FUNCTION` is explicit).
    pub fn due(&mut self) -> Result<Vec<DueLoad>, std::io::Error> {
        let newest = self.scan()?;
        let first = !self.started;
        self.started = true;
        let mut due = Vec::new();
        for (function, (path, stamp)) in newest {
            if self
                .loaded
                .get(&function)
                .is_some_and(|(p, s)| *p == path && *s == stamp)
            {
                continue;
            }
            let settled = self.pending.get(&path) == Some(&stamp);
            if !first && !settled {
                self.pending.insert(path, stamp);
                continue;
            }
            self.pending.remove(&path);
            let sql = format!(
                "CREATE OR REPLACE FUNCTION {function} FROM '{}'",
                path.display().to_string().replace('\'', "''")
            );
            due.push(DueLoad {
                function,
                path,
                stamp,
                sql,
            });
        }
        Ok(due)
    }

    /// Runs the statements of [`UdfDir::due`]; each file is recorded as loaded (or refused).
    pub async fn load(&mut self, due: Vec<DueLoad>, session: &mut Session) -> Vec<DirLoad> {
        let mut loads = Vec::new();
        for DueLoad {
            function,
            path,
            stamp,
            sql,
        } in due
        {
            let result = match session.execute(&sql).await {
                Ok(Output::Message(m)) => Ok(m),
                Ok(Output::Rows { .. }) => Ok(String::new()),
                Err(e) => Err(e.to_string()),
            };
            self.loaded.insert(function.clone(), (path.clone(), stamp));
            loads.push(DirLoad {
                function,
                path,
                result,
            });
        }
        loads
    }

    /// Each function's newest `.wasm` file in the directory.
    fn scan(&self) -> Result<BTreeMap<String, (PathBuf, Stamp)>, std::io::Error> {
        let mut newest: BTreeMap<String, (PathBuf, Stamp)> = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".wasm") else {
                continue;
            };
            let function = stem.split('.').next().unwrap_or(stem);
            if !is_identifier(function) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue; // removed between listing and reading
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = (meta.modified()?, meta.len());
            match newest.get(function) {
                Some((p, s)) if (s.0, p) >= (stamp.0, &path) => {}
                _ => {
                    newest.insert(function.to_string(), (path, stamp));
                }
            }
        }
        Ok(newest)
    }
}

fn is_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
