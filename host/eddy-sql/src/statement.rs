//! Eddy's own statements, recognised by their leading keywords; everything else is DataFusion's.
//!
//! Tokens come from `sqlparser` (the tokenizer DataFusion uses), so quoting and positions match
//! what DataFusion reports for its own statements.

use std::time::Duration;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use eddy_udf_host::{Limits, ShadowConfig, MAX_KEPT_DIFFERENCES};

use crate::{Error, Result};

/// The limits a `CREATE FUNCTION … WITH (…)` sets; those left out keep the runtime's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// `max_memory`: linear memory per instance, in bytes.
    pub max_memory: Option<usize>,
    /// `timeout`: wall time per call (one batch).
    pub timeout: Option<Duration>,
    /// `max_log_lines`: host-log lines per call before the rest are dropped.
    pub max_log_lines: Option<usize>,
}

impl LimitOverrides {
    /// `defaults` with these overrides applied.
    pub fn apply(&self, defaults: &Limits) -> Limits {
        Limits {
            max_memory: self.max_memory.unwrap_or(defaults.max_memory),
            timeout: self.timeout.unwrap_or(defaults.timeout),
            max_log_lines_per_call: self
                .max_log_lines
                .unwrap_or(defaults.max_log_lines_per_call),
            ..defaults.clone()
        }
    }
}

/// `WITH (shadow = true, …)`: load the component as the function's shadow, not to serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowOptions {
    /// `shadow_sample`: the fraction of batches the shadow runs on (default 1).
    pub sample: Option<f64>,
    /// `shadow_tolerance`: numeric results this close count as equal (default 0).
    pub tolerance: Option<f64>,
    /// `shadow_keep`: how many differing rows are kept (default 10).
    pub keep: Option<usize>,
}

impl ShadowOptions {
    /// The shadow's configuration, defaults filled in.
    pub fn config(&self) -> ShadowConfig {
        let defaults = ShadowConfig::default();
        ShadowConfig {
            sample: self.sample.unwrap_or(defaults.sample),
            tolerance: self.tolerance.unwrap_or(defaults.tolerance),
            keep: self.keep.unwrap_or(defaults.keep),
        }
    }
}

/// The options `WITH (…)` accepts, as error messages list them.
const OPTIONS: &str =
    "max_memory, timeout, max_log_lines, shadow, shadow_sample, shadow_tolerance or shadow_keep";

/// What `ALTER FUNCTION name …` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterAction {
    /// `PROMOTE`: the shadow becomes the serving version.
    Promote,
    /// `ROLLBACK`: the previous version serves again.
    Rollback,
    /// `DROP SHADOW`: the shadow stops.
    DropShadow,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE [OR REPLACE] FUNCTION name FROM 'path'`: loads a component (or builds a UDF
    /// crate directory first) and registers every function it describes.
    CreateFunction {
        /// The function the user asked for; the component must provide it.
        name: String,
        /// Component file, or UDF crate directory.
        path: String,
        /// Whether existing functions of the same names may be replaced.
        or_replace: bool,
        /// `WITH (…)`: limits for this component's instances.
        limits: LimitOverrides,
        /// `WITH (shadow = true, …)`: run it as the function's shadow instead.
        shadow: Option<ShadowOptions>,
    },
    /// `ALTER FUNCTION name PROMOTE | ROLLBACK | DROP SHADOW`.
    AlterFunction {
        /// The function.
        name: String,
        /// What to do.
        action: AlterAction,
    },
    /// `DROP FUNCTION [IF EXISTS] name [FORCE]`.
    DropFunction {
        /// The function.
        name: String,
        /// Succeed when it does not exist.
        if_exists: bool,
        /// Drop it even while running queries call it (they keep the version they have); the
        /// engine checks this, the session drops either way.
        force: bool,
    },
    /// `SHOW FUNCTIONS` / `LIST FUNCTIONS`.
    ShowFunctions,
    /// `DESCRIBE FUNCTION name [EXTENDED]`.
    DescribeFunction {
        /// The function.
        name: String,
        /// `EXTENDED`: also counters, versions and the shadow's comparison.
        extended: bool,
    },
    /// Anything else, for DataFusion.
    Sql(String),
}

struct Tokens {
    tokens: Vec<TokenWithSpan>,
    pos: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&TokenWithSpan> {
        self.tokens.get(self.pos)
    }

    fn keyword(&self, offset: usize) -> Option<String> {
        match self.tokens.get(self.pos + offset).map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
            _ => None,
        }
    }

    /// An error pointing at the token at `pos`.
    fn error_at(&self, pos: usize, message: String) -> Error {
        let start = self.tokens[pos].span.start;
        Error::Syntax {
            line: start.line,
            column: start.column,
            message,
        }
    }

    fn accept(&mut self, token: &Token) -> bool {
        let found = self.peek().is_some_and(|t| &t.token == token);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, token: Token) -> Result<()> {
        if self.accept(&token) {
            Ok(())
        } else {
            Err(self.error(&format!("'{token}'")))
        }
    }

    fn error(&self, expected: &str) -> Error {
        match self.peek() {
            Some(t) => Error::Syntax {
                line: t.span.start.line,
                column: t.span.start.column,
                message: format!("expected {expected}, found '{}'", t.token),
            },
            None => {
                let end = self.tokens.last().map(|t| t.span.end);
                Error::Syntax {
                    line: end.map_or(1, |e| e.line),
                    column: end.map_or(1, |e| e.column),
                    message: format!("expected {expected}, found end of statement"),
                }
            }
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<()> {
        if self.keyword(0).as_deref() == Some(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(kw))
        }
    }

    fn accept_keywords(&mut self, kws: &[&str]) -> bool {
        let matches = kws
            .iter()
            .enumerate()
            .all(|(i, kw)| self.keyword(i).as_deref() == Some(*kw));
        if matches {
            self.pos += kws.len();
        }
        matches
    }

    /// A function name: unquoted names are lower-cased, as DataFusion resolves them.
    fn identifier(&mut self, what: &str) -> Result<String> {
        let name = match self.peek().map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_lowercase(),
            Some(Token::Word(w)) => w.value.clone(),
            _ => return Err(self.error(what)),
        };
        self.pos += 1;
        Ok(name)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        match self.peek().map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    fn end(&mut self) -> Result<()> {
        if self.peek().is_some_and(|t| t.token == Token::SemiColon) {
            self.pos += 1;
        }
        if self.peek().is_none() {
            Ok(())
        } else {
            Err(self.error("end of statement"))
        }
    }
}

/// Parses one statement (without its trailing `;`).
pub fn parse(sql: &str) -> Result<Statement> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Syntax {
            line: e.location.line,
            column: e.location.column,
            message: e.message,
        })?
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut t = Tokens { tokens, pos: 0 };

    if t.accept_keywords(&["CREATE", "FUNCTION"]) {
        return create_function(&mut t, false);
    }
    if t.accept_keywords(&["CREATE", "OR", "REPLACE", "FUNCTION"]) {
        return create_function(&mut t, true);
    }
    if t.accept_keywords(&["DROP", "FUNCTION"]) {
        let if_exists = t.accept_keywords(&["IF", "EXISTS"]);
        let name = t.identifier("a function name")?;
        let force = t.accept_keywords(&["FORCE"]);
        t.end()?;
        return Ok(Statement::DropFunction {
            name,
            if_exists,
            force,
        });
    }
    if t.accept_keywords(&["SHOW", "FUNCTIONS"]) || t.accept_keywords(&["LIST", "FUNCTIONS"]) {
        t.end()?;
        return Ok(Statement::ShowFunctions);
    }
    if t.accept_keywords(&["DESCRIBE", "FUNCTION"]) {
        let name = t.identifier("a function name")?;
        let extended = t.accept_keywords(&["EXTENDED"]);
        t.end()?;
        return Ok(Statement::DescribeFunction { name, extended });
    }
    if t.accept_keywords(&["ALTER", "FUNCTION"]) {
        let name = t.identifier("a function name")?;
        let action = if t.accept_keywords(&["PROMOTE"]) {
            AlterAction::Promote
        } else if t.accept_keywords(&["ROLLBACK"]) {
            AlterAction::Rollback
        } else if t.accept_keywords(&["DROP", "SHADOW"]) {
            AlterAction::DropShadow
        } else {
            return Err(t.error("PROMOTE, ROLLBACK or DROP SHADOW"));
        };
        t.end()?;
        return Ok(Statement::AlterFunction { name, action });
    }
    Ok(Statement::Sql(sql.to_string()))
}

fn create_function(t: &mut Tokens, or_replace: bool) -> Result<Statement> {
    let name = t.identifier("a function name")?;
    t.expect_keyword("FROM")?;
    let path = t.string("a quoted path to a .wasm component or a UDF crate directory")?;
    let (limits, shadow) = if t.accept_keywords(&["WITH"]) {
        with_options(t)?
    } else {
        (LimitOverrides::default(), None)
    };
    t.end()?;
    Ok(Statement::CreateFunction {
        name,
        path,
        or_replace,
        limits,
        shadow,
    })
}

/// `(key = 'value', …)` after `WITH`: limits, and the shadow's options.
fn with_options(t: &mut Tokens) -> Result<(LimitOverrides, Option<ShadowOptions>)> {
    let mut limits = LimitOverrides::default();
    let mut shadow: Option<bool> = None;
    let mut shadow_options = ShadowOptions {
        sample: None,
        tolerance: None,
        keep: None,
    };
    // The first shadow_* option, to point at when `shadow = true` is missing.
    let mut shadow_option_at = None;
    t.expect(Token::LParen)?;
    loop {
        let key_pos = t.pos;
        let key = t.identifier(&format!("an option ({OPTIONS})"))?;
        t.expect(Token::Eq)?;
        let value_pos = t.pos;
        let value = match t.peek().map(|v| &v.token) {
            Some(Token::SingleQuotedString(v)) | Some(Token::Number(v, _)) => v.clone(),
            Some(Token::Word(w)) if w.quote_style.is_none() => w.value.clone(),
            _ => return Err(t.error(&format!("a quoted value for {key}"))),
        };
        t.pos += 1;
        let bad = |why: String| t.error_at(value_pos, format!("{key}: '{value}' {why}"));
        let set = match key.as_str() {
            "max_memory" => {
                let bytes = parse_size(&value).map_err(bad)?;
                limits.max_memory.replace(bytes).is_some()
            }
            "timeout" => {
                let timeout = parse_duration(&value).map_err(bad)?;
                limits.timeout.replace(timeout).is_some()
            }
            "max_log_lines" => {
                let lines = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("is not a whole number of lines".into()))?;
                limits.max_log_lines.replace(lines).is_some()
            }
            "shadow" => {
                let on = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("is not true or false".into())),
                };
                shadow.replace(on).is_some()
            }
            "shadow_sample" => {
                shadow_option_at.get_or_insert(key_pos);
                let sample = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0 && *s <= 1.0)
                    .ok_or_else(|| {
                        bad("is not a fraction of batches above 0 and at most 1".into())
                    })?;
                shadow_options.sample.replace(sample).is_some()
            }
            "shadow_tolerance" => {
                shadow_option_at.get_or_insert(key_pos);
                let tolerance = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| bad("is not a number of at least 0".into()))?;
                shadow_options.tolerance.replace(tolerance).is_some()
            }
            "shadow_keep" => {
                shadow_option_at.get_or_insert(key_pos);
                let keep = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|k| *k <= MAX_KEPT_DIFFERENCES)
                    .ok_or_else(|| {
                        bad(format!(
                            "is not a whole number of rows up to {MAX_KEPT_DIFFERENCES}"
                        ))
                    })?;
                shadow_options.keep.replace(keep).is_some()
            }
            _ => {
                return Err(t.error_at(
                    key_pos,
                    format!("unknown option '{key}'; expected {OPTIONS}"),
                ))
            }
        };
        if set {
            return Err(t.error_at(key_pos, format!("option {key} is given twice")));
        }
        if !t.accept(&Token::Comma) {
            break;
        }
    }
    t.expect(Token::RParen)?;
    match (shadow, shadow_option_at) {
        (Some(true), _) => Ok((limits, Some(shadow_options))),
        (_, Some(at)) => Err(t.error_at(at, "shadow options need shadow = true".into())),
        _ => Ok((limits, None)),
    }
}

/// `64MB`, `512 KiB`: a whole number and a unit; every unit is a power of 1024.
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    const UNITS: &str = "B, KB, MB, GB, KiB, MiB or GiB";
    let (number, unit) = split_number(text);
    let number: usize = number
        .parse()
        .ok()
        .filter(|_| !unit.starts_with('.'))
        .ok_or_else(|| format!("is not a size like '64MB' (a whole number and {UNITS})"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "B" => 0,
        "KB" | "KIB" => 10,
        "MB" | "MIB" => 20,
        "GB" | "GIB" => 30,
        "" => return Err(format!("needs a unit: {UNITS}")),
        _ => return Err(format!("has an unknown unit; expected {UNITS}")),
    };
    if number == 0 {
        return Err("must be more than zero".into());
    }
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| "is too large".to_string())
}

/// `50ms`, `2s`: a whole number of milliseconds or seconds.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let (number, unit) = split_number(text);
    let number: u64 = number
        .parse()
        .ok()
        .filter(|_| !unit.starts_with('.'))
        .ok_or_else(|| "is not a duration like '50ms' or '2s'".to_string())?;
    let duration = match unit.to_ascii_lowercase().as_str() {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "" => return Err("needs a unit: ms or s".into()),
        _ => return Err("has an unknown unit; expected ms or s".into()),
    };
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

/// The leading digits and the (trimmed) rest.
fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..digits], text[digits..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_function_statements() {
        assert_eq!(
            parse("create or replace function C_TO_F from 'a.wasm';").unwrap(),
            Statement::CreateFunction {
                name: "c_to_f".into(),
                path: "a.wasm".into(),
                or_replace: true,
                limits: LimitOverrides::default(),
                shadow: None,
            }
        );
        assert_eq!(
            parse("DROP FUNCTION IF EXISTS f").unwrap(),
            Statement::DropFunction {
                name: "f".into(),
                if_exists: true,
                force: false,
            }
        );
        assert_eq!(
            parse("drop function f force;").unwrap(),
            Statement::DropFunction {
                name: "f".into(),
                if_exists: false,
                force: true,
            }
        );
        assert_eq!(parse("list functions").unwrap(), Statement::ShowFunctions);
        assert_eq!(
            parse("DESCRIBE FUNCTION \"MixedCase\"").unwrap(),
            Statement::DescribeFunction {
                name: "MixedCase".into(),
                extended: false,
            }
        );
        assert_eq!(
            parse("describe function f extended;").unwrap(),
            Statement::DescribeFunction {
                name: "f".into(),
                extended: true,
            }
        );
        for (sql, action) in [
            ("ALTER FUNCTION f PROMOTE", AlterAction::Promote),
            ("alter function F rollback;", AlterAction::Rollback),
            ("ALTER FUNCTION f DROP SHADOW", AlterAction::DropShadow),
        ] {
            assert_eq!(
                parse(sql).unwrap(),
                Statement::AlterFunction {
                    name: "f".into(),
                    action
                }
            );
        }
        assert_eq!(
            parse("ALTER FUNCTION f PROMOT").unwrap_err().to_string(),
            "syntax error at line 1, column 18: expected PROMOTE, ROLLBACK or DROP SHADOW, found 'PROMOT'"
        );
        assert_eq!(
            parse("SELECT 1").unwrap(),
            Statement::Sql("SELECT 1".into())
        );
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let err = parse("CREATE FUNCTION f\n  FORM 'x.wasm'").unwrap_err();
        assert_eq!(
            err.to_string(),
            "syntax error at line 2, column 3: expected FROM, found 'FORM'"
        );
        let err = parse("CREATE FUNCTION f FROM x.wasm").unwrap_err();
        assert_eq!(
            err.to_string(),
            "syntax error at line 1, column 24: expected a quoted path to a .wasm component or a UDF crate directory, found 'x'"
        );
        let err = parse("DESCRIBE FUNCTION").unwrap_err();
        assert_eq!(
            err.to_string(),
            "syntax error at line 1, column 18: expected a function name, found end of statement"
        );
    }

    #[test]
    fn with_sets_limits() {
        let parsed = parse(
            "CREATE FUNCTION f FROM 'f.wasm' WITH (max_memory = '64MB', timeout = '50ms', max_log_lines = '10')",
        )
        .unwrap();
        let Statement::CreateFunction { limits, .. } = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(
            limits,
            LimitOverrides {
                max_memory: Some(64 << 20),
                timeout: Some(Duration::from_millis(50)),
                max_log_lines: Some(10),
            }
        );
        let defaults = Limits::default();
        let applied = limits.apply(&defaults);
        assert_eq!(applied.max_memory, 64 << 20);
        assert_eq!(applied.timeout, Duration::from_millis(50));
        assert_eq!(applied.max_log_lines_per_call, 10);
        assert_eq!(applied.max_table_elements, defaults.max_table_elements);

        let only_timeout = |sql: &str| match parse(sql).unwrap() {
            Statement::CreateFunction { limits, .. } => limits,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            only_timeout("create or replace function f from 'f.wasm' with (TIMEOUT='2S');"),
            LimitOverrides {
                timeout: Some(Duration::from_secs(2)),
                ..Default::default()
            }
        );
        assert_eq!(
            only_timeout("CREATE FUNCTION f FROM 'f.wasm' WITH (max_log_lines = 0)").max_log_lines,
            Some(0)
        );
    }

    #[test]
    fn with_shadow_loads_a_shadow_with_its_options() {
        let shadow = |sql: &str| match parse(sql) {
            Ok(Statement::CreateFunction { shadow, limits, .. }) => Ok((shadow, limits)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let (options, limits) = shadow(
            "CREATE OR REPLACE FUNCTION f FROM 'f.wasm' WITH (shadow = true, shadow_sample = '0.25', shadow_tolerance = 0.001, shadow_keep = 3, timeout = '1s')",
        )
        .unwrap();
        let config = options.unwrap().config();
        assert_eq!(
            config,
            ShadowConfig {
                sample: 0.25,
                tolerance: 0.001,
                keep: 3
            }
        );
        assert_eq!(limits.timeout, Some(Duration::from_secs(1)));
        let (options, _) =
            shadow("CREATE FUNCTION f FROM 'f.wasm' WITH (SHADOW = 'TRUE')").unwrap();
        assert_eq!(options.unwrap().config(), ShadowConfig::default());
        assert_eq!(
            shadow("CREATE FUNCTION f FROM 'f.wasm' WITH (shadow = false)")
                .unwrap()
                .0,
            None
        );
        assert_eq!(
            shadow("CREATE FUNCTION f FROM 'f.wasm' WITH (timeout = '1s', shadow_sample = '0.5')")
                .unwrap_err(),
            "syntax error at line 1, column 55: shadow options need shadow = true"
        );
        assert_eq!(
            shadow("CREATE FUNCTION f FROM 'f.wasm' WITH (shadow = true, shadow_sample = '0')")
                .unwrap_err(),
            "syntax error at line 1, column 70: shadow_sample: '0' is not a fraction of batches above 0 and at most 1"
        );
        assert_eq!(
            shadow("CREATE FUNCTION f FROM 'f.wasm' WITH (shadow = yes)").unwrap_err(),
            "syntax error at line 1, column 48: shadow: 'yes' is not true or false"
        );
        assert_eq!(
            shadow("CREATE FUNCTION f FROM 'f.wasm' WITH (shadow = true, shadow_keep = 5000)")
                .unwrap_err(),
            "syntax error at line 1, column 68: shadow_keep: '5000' is not a whole number of rows up to 1000"
        );
    }

    #[test]
    fn sizes_are_powers_of_1024() {
        let cases = [
            ("1B", 1),
            ("3 KB", 3 << 10),
            ("3KiB", 3 << 10),
            ("64MB", 64 << 20),
            ("64mib", 64 << 20),
            ("2GB", 2 << 30),
            ("2GiB", 2 << 30),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        assert_eq!(
            parse_size("64"),
            Err("needs a unit: B, KB, MB, GB, KiB, MiB or GiB".into())
        );
        assert_eq!(
            parse_size("64 TB"),
            Err("has an unknown unit; expected B, KB, MB, GB, KiB, MiB or GiB".into())
        );
        assert_eq!(
            parse_size("1.5GB"),
            Err(
                "is not a size like '64MB' (a whole number and B, KB, MB, GB, KiB, MiB or GiB)"
                    .into()
            )
        );
        assert_eq!(
            parse_duration("0.5s"),
            Err("is not a duration like '50ms' or '2s'".into())
        );
        assert_eq!(parse_size("0MB"), Err("must be more than zero".into()));
        assert_eq!(
            parse_size("99999999999999999GB"),
            Err("is too large".into())
        );
        assert_eq!(parse_duration("0s"), Err("must be more than zero".into()));
        assert_eq!(
            parse_duration("1m"),
            Err("has an unknown unit; expected ms or s".into())
        );
    }

    #[test]
    fn bad_options_name_the_key_and_point_at_the_token() {
        let err = |sql: &str| parse(sql).unwrap_err().to_string();
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH (max_mem = '64MB')"),
            "syntax error at line 1, column 39: unknown option 'max_mem'; expected max_memory, timeout, max_log_lines, shadow, shadow_sample, shadow_tolerance or shadow_keep"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm'\nWITH (timeout = '50ms', max_memory = '64XB')"),
            "syntax error at line 2, column 38: max_memory: '64XB' has an unknown unit; expected B, KB, MB, GB, KiB, MiB or GiB"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH (timeout = 'soon')"),
            "syntax error at line 1, column 49: timeout: 'soon' is not a duration like '50ms' or '2s'"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH (max_log_lines = '-1')"),
            "syntax error at line 1, column 55: max_log_lines: '-1' is not a whole number of lines"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH (timeout = '1s', timeout = '2s')"),
            "syntax error at line 1, column 55: option timeout is given twice"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH (timeout '1s')"),
            "syntax error at line 1, column 47: expected '=', found ''1s''"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH (timeout = '1s'"),
            "syntax error at line 1, column 53: expected ')', found end of statement"
        );
        assert_eq!(
            err("CREATE FUNCTION f FROM 'f.wasm' WITH ()"),
            "syntax error at line 1, column 39: expected an option (max_memory, timeout, max_log_lines, shadow, shadow_sample, shadow_tolerance or shadow_keep), found ')'"
        );
    }
}
