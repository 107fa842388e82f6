//! Eddy's own statements, recognised by their leading keywords; everything else is DataFusion's.
//!
//! Tokens come from `sqlparser` (the tokenizer DataFusion uses), so quoting and positions match
//! what DataFusion reports for its own statements.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::{Error, Result};

/// A parsed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    },
    /// `DROP FUNCTION [IF EXISTS] name`.
    DropFunction {
        /// The function.
        name: String,
        /// Succeed when it does not exist.
        if_exists: bool,
    },
    /// `SHOW FUNCTIONS` / `LIST FUNCTIONS`.
    ShowFunctions,
    /// `DESCRIBE FUNCTION name`.
    DescribeFunction {
        /// The function.
        name: String,
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
        t.end()?;
        return Ok(Statement::DropFunction { name, if_exists });
    }
    if t.accept_keywords(&["SHOW", "FUNCTIONS"]) || t.accept_keywords(&["LIST", "FUNCTIONS"]) {
        t.end()?;
        return Ok(Statement::ShowFunctions);
    }
    if t.accept_keywords(&["DESCRIBE", "FUNCTION"]) {
        let name = t.identifier("a function name")?;
        t.end()?;
        return Ok(Statement::DescribeFunction { name });
    }
    Ok(Statement::Sql(sql.to_string()))
}

fn create_function(t: &mut Tokens, or_replace: bool) -> Result<Statement> {
    let name = t.identifier("a function name")?;
    t.expect_keyword("FROM")?;
    let path = t.string("a quoted path to a .wasm component or a UDF crate directory")?;
    t.end()?;
    Ok(Statement::CreateFunction {
        name,
        path,
        or_replace,
    })
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
                or_replace: true
            }
        );
        assert_eq!(
            parse("DROP FUNCTION IF EXISTS f").unwrap(),
            Statement::DropFunction {
                name: "f".into(),
                if_exists: true
            }
        );
        assert_eq!(parse("list functions").unwrap(), Statement::ShowFunctions);
        assert_eq!(
            parse("DESCRIBE FUNCTION \"MixedCase\"").unwrap(),
            Statement::DescribeFunction {
                name: "MixedCase".into()
            }
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
}
