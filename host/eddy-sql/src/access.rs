//! What SQL may reach outside the engine: host files, the session's settings, and the crate
//! builds behind `CREATE FUNCTION … FROM 'dir'`. The CLI's user may do all of it; a network
//! client gets only what the server operator grants ([`Access::network`]).

use std::path::{Component, Path, PathBuf};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement as DfStatement};

use crate::{Error, Result};

/// Which host files SQL may read or write (DataFusion's `CREATE EXTERNAL TABLE` and `COPY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileAccess {
    /// Any file the process can open: the CLI, whose user already has the files.
    #[default]
    Any,
    /// Only files under this directory (canonical).
    Within(PathBuf),
    /// No file at all.
    Denied,
}

/// The abilities a session grants its statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// External tables and `COPY … TO`.
    pub files: FileAccess,
    /// `SET`/`RESET` of DataFusion settings, which change the session for everyone using it.
    pub settings: bool,
    /// `CREATE FUNCTION … FROM 'crate-dir'`, which runs `cargo build` (and so any `build.rs`)
    /// outside the sandbox; prebuilt `.wasm` components are always allowed.
    pub build_crates: bool,
}

impl Default for Access {
    fn default() -> Self {
        Access::full()
    }
}

impl Access {
    /// Everything: what the CLI's own user may do.
    pub fn full() -> Access {
        Access {
            files: FileAccess::Any,
            settings: true,
            build_crates: true,
        }
    }

    /// What a network client may do: no settings, no builds, and files only under
    /// `allow_files` if given.
    pub fn network(allow_files: Option<&Path>) -> Result<Access> {
        let files = match allow_files {
            None => FileAccess::Denied,
            Some(dir) => FileAccess::Within(
                dir.canonicalize()
                    .map_err(|e| Error::Refused(format!("--allow-files {}: {e}", dir.display())))?,
            ),
        };
        Ok(Access {
            files,
            settings: false,
            build_crates: false,
        })
    }

    /// Refuses `plan` if it (or anything nested in it, `EXPLAIN ANALYZE` included) reaches
    /// further than this access allows.
    pub fn check(&self, plan: &LogicalPlan) -> Result<()> {
        let mut refused = None;
        plan.apply_with_subqueries(|node| {
            let verdict = match node {
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(t)) => t
                    .locations
                    .iter()
                    .try_for_each(|l| self.check_file(l, "CREATE EXTERNAL TABLE")),
                LogicalPlan::Copy(copy) => self.check_file(&copy.output_url, "COPY"),
                LogicalPlan::Statement(
                    DfStatement::SetVariable(_) | DfStatement::ResetVariable(_),
                ) if !self.settings => Err(Error::Refused(
                    "SET changes DataFusion settings for every client of this server and is \
                     not allowed over the network; send per-request properties \
                     (\"streamsProperties\") instead"
                        .into(),
                )),
                _ => Ok(()),
            };
            match verdict {
                Ok(()) => Ok(TreeNodeRecursion::Continue),
                Err(e) => {
                    refused = Some(e);
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        })?;
        refused.map_or(Ok(()), Err)
    }

    /// Refuses building a UDF crate from `path` unless builds are allowed.
    pub fn check_build(&self, path: &Path) -> Result<()> {
        if path.is_dir() && !self.build_crates {
            return Err(Error::Refused(format!(
                "'{}' is a crate directory: building one runs its build scripts outside the \
                 sandbox and is not allowed over the network; build it with `eddy udf build` \
                 and load the .wasm component",
                path.display()
            )));
        }
        Ok(())
    }

    fn check_file(&self, location: &str, what: &str) -> Result<()> {
        let dir = match &self.files {
            FileAccess::Any => return Ok(()),
            FileAccess::Denied => {
                return Err(Error::Refused(format!(
                    "{what} reads or writes host files and is not allowed over the network \
                     (the server's operator can allow one directory with --allow-files DIR)"
                )))
            }
            FileAccess::Within(dir) => dir,
        };
        if inside(location, dir) {
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "{what}: '{location}' is outside the directory this server allows files in ({})",
                dir.display()
            )))
        }
    }
}

/// Whether `location` (a path or `file://` URL, possibly not yet existing) lies under `dir`.
fn inside(location: &str, dir: &Path) -> bool {
    let path = match location.strip_prefix("file://") {
        Some(rest) => rest,
        // Any other URL scheme (s3://, http://) is not a local file under `dir`.
        None if location.contains("://") => return false,
        None => location,
    };
    let path = Path::new(path);
    // `..` could climb out after the prefix check; nothing legitimate needs it.
    if path.components().any(|c| c == Component::ParentDir) {
        return false;
    }
    let Ok(cwd) = std::env::current_dir() else {
        return false;
    };
    let absolute = cwd.join(path);
    // The longest part that exists decides, resolved through symlinks; the rest is new names.
    let mut existing = absolute.as_path();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return real.starts_with(dir);
        }
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_after_resolving_them() {
        let dir = std::env::temp_dir().join(format!("eddy-access-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let dir = dir.canonicalize().unwrap();
        let d = dir.display();
        assert!(inside(&format!("{d}/sub/new.csv"), &dir));
        assert!(inside(&format!("file://{d}/a.csv"), &dir));
        assert!(!inside(&format!("{d}/../etc/passwd"), &dir));
        assert!(!inside("/etc/passwd", &dir));
        assert!(!inside("s3://bucket/x", &dir));
        #[cfg(unix)]
        {
            let link = dir.join("out");
            let _ = std::os::unix::fs::symlink("/etc", &link);
            assert!(!inside(&format!("{d}/out/passwd"), &dir));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
