//! `eddy sql`'s prompt on a terminal: line editing, and a history kept across runs.
//!
//! Only the prompt loop touches the terminal; collecting statements and keeping the history file
//! are plain functions, so they can be tested without one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rustyline::error::ReadlineError;
use rustyline::history::History;

/// Collects input lines until a statement ends: a line whose last non-blank character is `;`.
#[derive(Default)]
pub(crate) struct Statements {
    buffer: String,
}

impl Statements {
    /// Adds a line; returns the input so far (one or more statements) once it ends with `;`.
    pub(crate) fn push(&mut self, line: &str) -> Option<String> {
        self.buffer.push_str(line.trim_end_matches(['\r', '\n']));
        self.buffer.push('\n');
        if self.buffer.trim_end().ends_with(';') {
            Some(std::mem::take(&mut self.buffer))
        } else {
            None
        }
    }

    /// True when no statement is half typed.
    pub(crate) fn is_empty(&self) -> bool {
        self.buffer.trim().is_empty()
    }

    /// Forgets a half-typed statement (Ctrl-C).
    pub(crate) fn clear(&mut self) {
        self.buffer.clear();
    }
}

/// Where history is kept: `$EDDY_HISTORY`, else `~/.eddy_history`; `None` without either.
pub(crate) fn history_path(
    eddy_history: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    eddy_history
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| PathBuf::from(h).join(".eddy_history")))
}

/// Loads `path` into `history`, creating the file when it is missing. Returns a warning rather
/// than failing: a prompt without history still works.
pub(crate) fn load_history(history: &mut impl History, path: &Path) -> Option<String> {
    let created = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Err(e) = created {
        return Some(format!("history {}: {e}", path.display()));
    }
    history
        .load(path)
        .err()
        .map(|e| format!("reading history {}: {e}", path.display()))
}

/// Records one complete input (multi-line statements stay one entry) and appends it to `path`.
/// Returns a warning rather than failing.
pub(crate) fn record(
    history: &mut impl History,
    path: Option<&Path>,
    input: &str,
) -> Option<String> {
    let entry = input.trim();
    if entry.is_empty() {
        return None;
    }
    if let Err(e) = history.add(entry) {
        return Some(format!("history: {e}"));
    }
    let path = path?;
    history
        .append(path)
        .err()
        .map(|e| format!("writing history {}: {e}", path.display()))
}

/// The prompt: reads statements with line editing and history and hands each complete input to
/// `execute`. Ctrl-C clears the current input; Ctrl-D exits.
pub(crate) async fn prompt(mut execute: impl AsyncFnMut(String)) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let path = history_path(std::env::var_os("EDDY_HISTORY"), std::env::var_os("HOME"));
    if let Some(path) = &path {
        if let Some(warning) = load_history(editor.history_mut(), path) {
            eprintln!("warning: {warning}");
        }
    }
    let mut statements = Statements::default();
    loop {
        let prompt = if statements.is_empty() {
            "eddy> "
        } else {
            "   -> "
        };
        // readline blocks on the terminal; other tasks keep running on the runtime's other threads.
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        match line {
            Ok(line) => {
                if let Some(input) = statements.push(&line) {
                    if let Some(warning) = record(editor.history_mut(), path.as_deref(), &input) {
                        eprintln!("warning: {warning}");
                    }
                    execute(input).await;
                }
            }
            Err(ReadlineError::Interrupted) => statements.clear(),
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::{FileHistory, SearchDirection};

    #[test]
    fn statements_end_at_a_semicolon_at_the_end_of_a_line() {
        let mut statements = Statements::default();
        assert!(statements.is_empty());
        assert_eq!(statements.push("SELECT *"), None);
        assert!(!statements.is_empty());
        assert_eq!(statements.push("FROM s; -- not yet"), None);
        assert_eq!(
            statements.push("SELECT 2;  \r\n").as_deref(),
            Some("SELECT *\nFROM s; -- not yet\nSELECT 2;  \n")
        );
        assert!(statements.is_empty());
        assert_eq!(statements.push("SHOW"), None);
        statements.clear();
        assert!(statements.is_empty());
        assert_eq!(
            statements.push("SHOW STREAMS;").as_deref(),
            Some("SHOW STREAMS;\n")
        );
    }

    #[test]
    fn history_lives_in_eddy_history_or_the_home_directory() {
        assert_eq!(
            history_path(Some("/tmp/h".into()), Some("/home/u".into())),
            Some(PathBuf::from("/tmp/h"))
        );
        assert_eq!(
            history_path(Some("".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.eddy_history"))
        );
        assert_eq!(history_path(None, None), None);
    }

    #[test]
    fn history_is_created_kept_across_runs_and_failures_are_warnings() {
        let dir = std::env::temp_dir().join(format!("eddy-repl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history");
        let _ = std::fs::remove_file(&path);

        let mut first = FileHistory::new();
        assert_eq!(load_history(&mut first, &path), None);
        assert!(path.exists(), "created when missing");
        assert_eq!(record(&mut first, Some(&path), "SELECT *\nFROM s;\n"), None);
        assert_eq!(record(&mut first, Some(&path), "   \n"), None);
        assert_eq!(record(&mut first, Some(&path), "SHOW STREAMS;\n"), None);

        // A later run recalls both, the multi-line statement as one entry.
        let mut second = FileHistory::new();
        assert_eq!(load_history(&mut second, &path), None);
        assert_eq!(second.len(), 2);
        let entry = |h: &FileHistory, i| {
            h.get(i, SearchDirection::Forward)
                .unwrap()
                .unwrap()
                .entry
                .into_owned()
        };
        assert_eq!(entry(&second, 0), "SELECT *\nFROM s;");
        assert_eq!(entry(&second, 1), "SHOW STREAMS;");

        // A directory cannot be a history file: a warning, and the prompt goes on.
        let mut third = FileHistory::new();
        assert!(load_history(&mut third, &dir).is_some());
        assert!(record(&mut third, Some(&dir), "SHOW TABLES;").is_some());
        assert_eq!(third.len(), 1, "still recalled in this run");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
