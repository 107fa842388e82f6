//! The ksqlDB-flavoured statements: streams, tables, persistent and push queries.
//!
//! Recognised by their leading keywords; everything else goes to [`eddy_sql::Session`].

use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use eddy_connector::Options;

use crate::{Error, Result};

/// A stream (append-only events) or a table (latest value per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `STREAM`.
    Stream,
    /// `TABLE`.
    Table,
}

impl Kind {
    /// The keyword, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Table => "table",
        }
    }
}

/// A declared column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Its name, lower-cased unless quoted.
    pub name: String,
    /// Its Arrow type.
    pub data_type: DataType,
    /// `KEY` (streams) or `PRIMARY KEY` (tables).
    pub key: bool,
}

impl Column {
    /// The Arrow field (every column is nullable, as in ksqlDB).
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.data_type.clone(), true)
    }
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE STREAM|TABLE name (columns) WITH (…)`: a relation read from outside.
    CreateSource {
        /// Stream or table.
        kind: Kind,
        /// Its name.
        name: String,
        /// `OR REPLACE`.
        or_replace: bool,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// `CREATE SOURCE STREAM|TABLE`: read-only, as in ksqlDB (no INSERT, no replacing).
        read_only: bool,
        /// Declared columns (empty for the generator, whose columns are fixed).
        columns: Vec<Column>,
        /// `WITH (…)`, keys lower-cased.
        options: Options,
    },
    /// `CREATE STREAM|TABLE name [WITH (…)] AS SELECT …`: a persistent query.
    CreateAs {
        /// Stream or table.
        kind: Kind,
        /// The relation it writes.
        name: String,
        /// `OR REPLACE`.
        or_replace: bool,
        /// `WITH (…)`, keys lower-cased.
        options: Options,
        /// The query, from `SELECT` on.
        query: String,
    },
    /// `INSERT INTO stream SELECT …`: a persistent query appending to an existing stream.
    InsertQuery {
        /// The stream it writes.
        target: String,
        /// The query, from `SELECT` on (what precedes it blanked, so positions hold).
        query: String,
    },
    /// `SELECT … EMIT CHANGES [LIMIT n]`: a push query.
    Push {
        /// The query, `EMIT CHANGES` and `LIMIT` removed.
        query: String,
        /// Stop after this many rows.
        limit: Option<usize>,
    },
    /// `SHOW|LIST STREAMS`.
    ShowStreams,
    /// `SHOW|LIST TABLES`.
    ShowTables,
    /// `SHOW|LIST QUERIES`.
    ShowQueries,
    /// `TERMINATE id` or `TERMINATE ALL` (`None`).
    Terminate(Option<String>),
    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`.
    Drop {
        /// Stream or table.
        kind: Kind,
        /// Its name.
        name: String,
        /// Succeed when it does not exist.
        if_exists: bool,
    },
    /// `PRINT topic [FROM BEGINNING] [LIMIT n]`: a topic's records as they are.
    Print {
        /// The Kafka topic.
        topic: String,
        /// Start at the oldest record instead of the newest.
        from_beginning: bool,
        /// Stop after this many records.
        limit: Option<usize>,
    },
    /// `SET 'key' = 'value'`: a session property such as `auto.offset.reset`.
    Set {
        /// The property.
        key: String,
        /// Its value.
        value: String,
    },
    /// `SELECT …` or `WITH … SELECT …` without `EMIT CHANGES`: a pull query, which DataFusion
    /// runs over the tables and the rows streams keep.
    Query(String),
    /// `SHOW|LIST PROPERTIES`.
    ShowProperties,
    /// `DEFINE name = 'value'`: a session variable, substituted for `${name}` later.
    Define {
        /// Its name, as written.
        name: String,
        /// Its value.
        value: String,
    },
    /// `UNDEFINE name`.
    Undefine(String),
    /// `SHOW|LIST VARIABLES`.
    ShowVariables,
    /// `SHOW|LIST [ALL] TOPICS [EXTENDED]`: the broker's topics.
    ShowTopics {
        /// `ALL`: internal topics too.
        all: bool,
    },
    /// `DESCRIBE name [EXTENDED]`: a stream's or table's columns.
    Describe {
        /// The stream or table.
        name: String,
        /// `EXTENDED`: also its queries and statement.
        extended: bool,
    },
    /// A function statement (`CREATE|ALTER|DROP FUNCTION`, `SHOW FUNCTIONS`, `DESCRIBE
    /// FUNCTION`), parsed by [`eddy_sql::parse`].
    Function(eddy_sql::Statement),
    /// Anything else, for DataFusion: INSERT, EXPLAIN, plain SQL.
    Other(String),
}

pub(crate) struct Tokens {
    pub(crate) tokens: Vec<TokenWithSpan>,
    pub(crate) pos: usize,
}

impl Tokens {
    pub(crate) fn new(sql: &str) -> Result<Tokens> {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .map_err(Error::tokenizer)?;
        let tokens = tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        Ok(Tokens { tokens, pos: 0 })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.token)
    }

    pub(crate) fn keyword(&self, offset: usize) -> Option<String> {
        match self.tokens.get(self.pos + offset).map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
            _ => None,
        }
    }

    fn accept_keyword(&mut self, kw: &str) -> bool {
        let found = self.keyword(0).as_deref() == Some(kw);
        if found {
            self.pos += 1;
        }
        found
    }

    fn accept_keywords(&mut self, kws: &[&str]) -> bool {
        let found = kws
            .iter()
            .enumerate()
            .all(|(i, kw)| self.keyword(i).as_deref() == Some(*kw));
        if found {
            self.pos += kws.len();
        }
        found
    }

    fn accept(&mut self, token: &Token) -> bool {
        let found = self.peek() == Some(token);
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

    /// "syntax error at line L, column C: expected X, found 'Y'".
    pub(crate) fn error(&self, expected: &str) -> Error {
        Error::syntax_at(self.tokens.get(self.pos), self.tokens.last(), expected)
    }

    fn identifier(&mut self, what: &str) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let name = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                };
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.error(what)),
        }
    }

    /// A session variable's name, as written: a letter or `_`, then letters, digits or `_`.
    fn variable(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w))
                if w.quote_style.is_none()
                    && w.value
                        .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') =>
            {
                let name = w.value.clone();
                self.pos += 1;
                Ok(name)
            }
            _ => Err(self.error("a variable name (a letter or _, then letters, digits or _)")),
        }
    }

    fn value(&mut self, what: &str) -> Result<String> {
        let value = match self.peek() {
            Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => s.clone(),
            Some(Token::Number(n, _)) => n.clone(),
            Some(Token::Word(w)) => w.value.clone(),
            _ => return Err(self.error(what)),
        };
        self.pos += 1;
        Ok(value)
    }

    /// The `>` closing a type's parameters; of a `>>` (two closing at once), the first half.
    fn close_angle(&mut self) -> Result<()> {
        match self.tokens.get_mut(self.pos) {
            Some(t) if t.token == Token::ShiftRight => {
                t.token = Token::Gt;
                t.span.start.column += 1;
                Ok(())
            }
            _ => self.expect(Token::Gt),
        }
    }

    /// An integer literal from `min` to `max`.
    fn number(&mut self, what: &str, min: u32, max: u32) -> Result<u32> {
        match self.peek() {
            Some(Token::Number(n, _)) => match n.parse::<u32>() {
                Ok(v) if (min..=max).contains(&v) => {
                    self.pos += 1;
                    Ok(v)
                }
                _ => Err(self.error(what)),
            },
            _ => Err(self.error(what)),
        }
    }

    fn end(&mut self) -> Result<()> {
        self.accept(&Token::SemiColon);
        if self.pos < self.tokens.len() {
            Err(self.error("the end of the statement"))
        } else {
            Ok(())
        }
    }

    /// Byte offset in `sql` of the token at `pos`.
    pub(crate) fn offset(&self, sql: &str, pos: usize) -> usize {
        let start = self.tokens[pos].span.start;
        let mut offset = 0;
        for (i, line) in sql.split_inclusive('\n').enumerate() {
            if i + 1 == start.line as usize {
                return offset
                    + line
                        .char_indices()
                        .nth(start.column as usize - 1)
                        .map_or(line.len(), |(b, _)| b);
            }
            offset += line.len();
        }
        sql.len()
    }
}

/// Parses one statement.
pub fn parse(sql: &str) -> Result<Statement> {
    parse_text(&eddy_sql::explode_as_unnest(&eddy_sql::quote_time_units(
        &eddy_sql::rewrite_lambdas(&crate::structs::rewrite(sql)),
    )))
}

fn parse_text(sql: &str) -> Result<Statement> {
    let mut t = Tokens::new(sql)?;
    // What is not a stream statement: a function statement, or SQL for DataFusion.
    let other = || match eddy_sql::parse(sql)? {
        eddy_sql::Statement::Sql(sql) => Ok(Statement::Other(sql)),
        function => Ok(Statement::Function(function)),
    };
    match t.keyword(0).as_deref() {
        Some("CREATE") => {
            let mut look = 1;
            let or_replace = t.keyword(1).as_deref() == Some("OR");
            if or_replace {
                look += 2;
            }
            let read_only = t.keyword(look).as_deref() == Some("SOURCE")
                && matches!(t.keyword(look + 1).as_deref(), Some("STREAM" | "TABLE"));
            if read_only {
                look += 1;
            }
            let kind = match t.keyword(look).as_deref() {
                Some("STREAM") => Kind::Stream,
                Some("TABLE") => Kind::Table,
                _ => return other(),
            };
            t.pos += look + 1;
            if or_replace && t.keyword(0).is_none() {
                return other();
            }
            create(sql, &mut t, kind, or_replace, read_only)
        }
        Some("SELECT") => {
            // A push query ends in EMIT CHANGES, perhaps followed by LIMIT n.
            let n = t.tokens.len();
            let mut end = n;
            if matches!(t.tokens.last().map(|t| &t.token), Some(Token::SemiColon)) {
                end -= 1;
            }
            let mut limit = None;
            if end >= 2 {
                if let (Some("LIMIT"), Token::Number(v, _)) =
                    (t.keyword(end - 2).as_deref(), &t.tokens[end - 1].token)
                {
                    limit = Some(v.parse().map_err(|_| {
                        Error::Syntax(format!("LIMIT must be a whole number, found {v}"))
                    })?);
                    end -= 2;
                }
            }
            if end >= 2
                && t.keyword(end - 2).as_deref() == Some("EMIT")
                && t.keyword(end - 1).as_deref() == Some("CHANGES")
            {
                let cut = t.offset(sql, end - 2);
                let mut query = sql[..cut].trim_end().to_string();
                if limit.is_some() && query.to_uppercase().contains(" LIMIT ") {
                    return Err(Error::Syntax("LIMIT goes after EMIT CHANGES".into()));
                }
                query.truncate(query.trim_end().len());
                return Ok(Statement::Push { query, limit });
            }
            Ok(Statement::Query(sql.to_string()))
        }
        Some("WITH") => Ok(Statement::Query(sql.to_string())),
        // INSERT INTO … VALUES (and a column list) is DataFusion's; a SELECT makes a query.
        Some("INSERT") if t.keyword(1).as_deref() == Some("INTO") => {
            t.pos += 2;
            let target = t.identifier("the stream name")?;
            if t.keyword(0).as_deref() != Some("SELECT") {
                return other();
            }
            Ok(Statement::InsertQuery {
                target,
                query: blank_before(sql, t.offset(sql, t.pos)),
            })
        }
        Some("SHOW") | Some("LIST") => {
            let what = t.keyword(1);
            t.pos += 2;
            let statement = match what.as_deref() {
                Some("STREAMS") => Statement::ShowStreams,
                Some("TABLES") => Statement::ShowTables,
                Some("QUERIES") => Statement::ShowQueries,
                Some("PROPERTIES") => Statement::ShowProperties,
                Some("VARIABLES") => Statement::ShowVariables,
                Some("TOPICS") => Statement::ShowTopics { all: false },
                Some("ALL") if t.keyword(0).as_deref() == Some("TOPICS") => {
                    t.pos += 1;
                    Statement::ShowTopics { all: true }
                }
                _ => return other(),
            };
            t.accept_keyword("EXTENDED");
            t.end()?;
            Ok(statement)
        }
        Some("DEFINE") => {
            t.pos += 1;
            let name = t.variable()?;
            t.expect(Token::Eq)?;
            let value = match t.peek() {
                Some(Token::SingleQuotedString(s)) => s.clone(),
                _ => return Err(t.error("a variable's value in quotes (DEFINE name = 'value')")),
            };
            t.pos += 1;
            t.end()?;
            Ok(Statement::Define { name, value })
        }
        Some("UNDEFINE") => {
            t.pos += 1;
            let name = t.variable()?;
            t.end()?;
            Ok(Statement::Undefine(name))
        }
        Some("PRINT") => {
            t.pos += 1;
            // Topic names keep their case: they are Kafka's, not SQL identifiers.
            let topic = match t.tokens.get(t.pos).map(|t| &t.token) {
                Some(Token::Word(w)) => w.value.clone(),
                Some(Token::SingleQuotedString(s)) => s.clone(),
                _ => return Err(t.error("a topic name")),
            };
            t.pos += 1;
            let from_beginning = t.accept_keywords(&["FROM", "BEGINNING"]);
            let limit = if t.accept_keyword("LIMIT") {
                let n = t.value("a number of records")?;
                Some(n.parse().map_err(|_| {
                    Error::Syntax(format!("LIMIT must be a whole number, found {n}"))
                })?)
            } else {
                None
            };
            t.end()?;
            Ok(Statement::Print {
                topic,
                from_beginning,
                limit,
            })
        }
        Some("DESCRIBE")
            if !matches!(
                t.keyword(1).as_deref(),
                Some("FUNCTION" | "STREAMS" | "TABLES")
            ) =>
        {
            t.pos += 1;
            let name = t.identifier("a stream or table name")?;
            let extended = t.accept_keyword("EXTENDED");
            t.end()?;
            Ok(Statement::Describe { name, extended })
        }
        Some("TERMINATE") => {
            t.pos += 1;
            let target = if t.accept_keyword("ALL") {
                None
            } else {
                Some(t.value("a query id (see SHOW QUERIES) or ALL")?)
            };
            t.end()?;
            Ok(Statement::Terminate(target))
        }
        Some("DROP") => {
            let kind = match t.keyword(1).as_deref() {
                Some("STREAM") => Kind::Stream,
                Some("TABLE") => Kind::Table,
                _ => return other(),
            };
            t.pos += 2;
            let if_exists = t.accept_keywords(&["IF", "EXISTS"]);
            let name = t.identifier(&format!("the {} name", kind.as_str()))?;
            // The topic stays: Eddy does not delete what it did not create.
            if t.accept_keywords(&["DELETE", "TOPIC"]) {
                return Err(Error::Unsupported(
                    "DROP … DELETE TOPIC: Eddy never deletes topics; drop without it".into(),
                ));
            }
            t.end()?;
            Ok(Statement::Drop {
                kind,
                name,
                if_exists,
            })
        }
        Some("SET")
            if matches!(
                t.tokens.get(1).map(|t| &t.token),
                Some(Token::SingleQuotedString(_))
            ) =>
        {
            t.pos += 1;
            let key = t.value("a property name")?;
            t.expect(Token::Eq)?;
            let value = t.value("a value")?;
            t.end()?;
            Ok(Statement::Set { key, value })
        }
        _ => other(),
    }
}

/// The query that starts at `start` in `sql`, with what precedes it blanked out rather than cut,
/// so errors in the query point at the same line and column as in the statement the user wrote.
fn blank_before(sql: &str, start: usize) -> String {
    let prefix: String = sql[..start]
        .chars()
        .map(|c| if c == '\n' { c } else { ' ' })
        .collect();
    format!("{prefix}{}", sql[start..].trim_end().trim_end_matches(';'))
}

fn create(
    sql: &str,
    t: &mut Tokens,
    kind: Kind,
    or_replace: bool,
    read_only: bool,
) -> Result<Statement> {
    let if_not_exists = t.accept_keywords(&["IF", "NOT", "EXISTS"]);
    let name = t.identifier(&format!("the {} name", kind.as_str()))?;
    let mut columns = Vec::new();
    if t.accept(&Token::LParen) {
        loop {
            columns.push(column(t, kind)?);
            if !t.accept(&Token::Comma) {
                break;
            }
        }
        t.expect(Token::RParen)?;
    }
    let options = if t.accept_keyword("WITH") {
        options(t)?
    } else {
        Options::new()
    };
    if t.accept_keyword("AS") {
        if !columns.is_empty() {
            return Err(Error::Syntax(
                "a CREATE … AS SELECT takes its columns from the query: remove the column list"
                    .into(),
            ));
        }
        if t.keyword(0).as_deref() != Some("SELECT") {
            return Err(t.error("SELECT"));
        }
        if read_only {
            return Err(Error::Syntax(format!(
                "a SOURCE {0} is read from a topic, not written by a query: use CREATE {0} … \
                 AS SELECT",
                kind.as_str().to_uppercase()
            )));
        }
        return Ok(Statement::CreateAs {
            kind,
            name,
            or_replace,
            options,
            query: blank_before(sql, t.offset(sql, t.pos)),
        });
    }
    t.end()?;
    Ok(Statement::CreateSource {
        kind,
        name,
        or_replace,
        if_not_exists,
        read_only,
        columns,
        options,
    })
}

fn column(t: &mut Tokens, kind: Kind) -> Result<Column> {
    let name = t.identifier("a column name")?;
    let data_type = data_type(t)?;
    let key = match kind {
        Kind::Stream => t.accept_keyword("KEY"),
        Kind::Table => {
            if t.accept_keywords(&["PRIMARY", "KEY"]) {
                true
            } else if t.keyword(0).as_deref() == Some("KEY") {
                return Err(t.error("PRIMARY KEY (a table's key is its PRIMARY KEY)"));
            } else {
                false
            }
        }
    };
    Ok(Column {
        name,
        data_type,
        key,
    })
}

/// What [`data_type`] accepts, for its error.
const TYPES: &str = "a type (BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL(p, s), VARCHAR, BYTES, \
                     TIMESTAMP, DATE, TIME, ARRAY<…>, MAP<VARCHAR, …> or STRUCT<…>)";

/// ksqlDB's column types, as Arrow types.
fn data_type(t: &mut Tokens) -> Result<DataType> {
    let Some(word) = t.keyword(0) else {
        return Err(t.error(TYPES));
    };
    t.pos += 1;
    Ok(match word.as_str() {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "DOUBLE" | "FLOAT" | "REAL" => DataType::Float64,
        "VARCHAR" | "STRING" => DataType::Utf8,
        "BYTES" => DataType::Binary,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "DATE" => DataType::Date32,
        "TIME" => DataType::Time32(TimeUnit::Millisecond),
        "DECIMAL" => {
            t.expect(Token::LParen)?;
            let precision = t.number("a DECIMAL precision (1 to 38)", 1, 38)?;
            t.expect(Token::Comma)?;
            let scale = t.number(
                &format!("a DECIMAL scale (0 to the precision, {precision})"),
                0,
                precision,
            )?;
            t.expect(Token::RParen)?;
            // Both are range-checked above, so they fit.
            DataType::Decimal128(precision as u8, scale as i8)
        }
        "ARRAY" => {
            t.expect(Token::Lt)?;
            let item = data_type(t)?;
            t.close_angle()?;
            DataType::new_list(item, true)
        }
        "MAP" => {
            t.expect(Token::Lt)?;
            if !matches!(t.keyword(0).as_deref(), Some("VARCHAR" | "STRING")) {
                return Err(t.error("VARCHAR (a MAP's keys are strings, as in ksqlDB)"));
            }
            t.pos += 1;
            t.expect(Token::Comma)?;
            let value = data_type(t)?;
            t.close_angle()?;
            map_type(value)
        }
        "STRUCT" => {
            let mut fields: Vec<Field> = Vec::new();
            // `STRUCT<>` reads as one `<>` token.
            if t.accept(&Token::Neq) {
                return Ok(DataType::Struct(fields.into()));
            }
            t.expect(Token::Lt)?;
            if !t.accept(&Token::Gt) {
                loop {
                    let at = t.pos;
                    let name = t.identifier("a field name")?;
                    if fields.iter().any(|f| f.name() == &name) {
                        t.pos = at;
                        return Err(t.error("a field name not used before in this STRUCT"));
                    }
                    let data_type = data_type(t)?;
                    fields.push(Field::new(name, data_type, true));
                    if !t.accept(&Token::Comma) {
                        break;
                    }
                }
                t.close_angle()?;
            }
            DataType::Struct(fields.into())
        }
        _ => {
            t.pos -= 1;
            return Err(t.error(TYPES));
        }
    })
}

/// `MAP<VARCHAR, value>` as Arrow's map: non-null string keys, nullable values, unsorted.
pub(crate) fn map_type(value: DataType) -> DataType {
    let entries = Field::new_struct(
        "entries",
        vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", value, true),
        ],
        false,
    );
    DataType::Map(entries.into(), false)
}

fn options(t: &mut Tokens) -> Result<Options> {
    t.expect(Token::LParen)?;
    let mut options = Options::new();
    loop {
        let key = t.value("an option name")?.to_lowercase();
        t.expect(Token::Eq)?;
        let value = t.value(&format!("a value for {key}"))?;
        options.insert(key, value);
        if !t.accept(&Token::Comma) {
            break;
        }
    }
    t.expect(Token::RParen)?;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_queries() {
        let s = parse(
            "CREATE STREAM car (car_id VARCHAR KEY, speed DOUBLE, tags ARRAY<VARCHAR>) \
             WITH (kafka_topic='cars', value_format='JSON', timestamp='ts');",
        )
        .unwrap();
        let Statement::CreateSource {
            kind,
            name,
            columns,
            options,
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(kind, Kind::Stream);
        assert_eq!(name, "car");
        assert_eq!(columns.len(), 3);
        assert!(columns[0].key);
        assert_eq!(options["kafka_topic"], "cars");
        assert_eq!(options["value_format"], "JSON");

        let s = parse("CREATE TABLE t WITH (kafka_topic='o') AS SELECT a FROM s EMIT CHANGES;")
            .unwrap();
        assert!(
            matches!(&s, Statement::CreateAs { kind: Kind::Table, query, .. } if query.trim() == "SELECT a FROM s EMIT CHANGES"),
            "{s:?}"
        );
        assert_eq!(
            parse("select * from s emit changes limit 3;").unwrap(),
            Statement::Push {
                query: "select * from s".into(),
                limit: Some(3)
            }
        );
        assert_eq!(
            parse("SELECT * FROM s").unwrap(),
            Statement::Query("SELECT * FROM s".into())
        );
        assert_eq!(
            parse("INSERT INTO s VALUES (1)").unwrap(),
            Statement::Other("INSERT INTO s VALUES (1)".into())
        );
        assert_eq!(
            parse("INSERT INTO s (a) VALUES (1)").unwrap(),
            Statement::Other("INSERT INTO s (a) VALUES (1)".into())
        );
        // The query keeps its place in the text, so its errors point where the user looks.
        assert_eq!(
            parse("insert into All_Cars SELECT * FROM eu EMIT CHANGES;").unwrap(),
            Statement::InsertQuery {
                target: "all_cars".into(),
                query: format!("{}SELECT * FROM eu EMIT CHANGES", " ".repeat(21)),
            }
        );
        assert_eq!(
            parse("describe S extended;").unwrap(),
            Statement::Describe {
                name: "s".into(),
                extended: true
            }
        );
        assert_eq!(
            parse("SHOW ALL TOPICS EXTENDED").unwrap(),
            Statement::ShowTopics { all: true }
        );
        assert_eq!(parse("list properties").unwrap(), Statement::ShowProperties);
        assert_eq!(
            parse("define Topic = 'it''s';").unwrap(),
            Statement::Define {
                name: "Topic".into(),
                value: "it's".into()
            }
        );
        assert_eq!(
            parse("UNDEFINE topic").unwrap(),
            Statement::Undefine("topic".into())
        );
        assert_eq!(parse("show variables").unwrap(), Statement::ShowVariables);
        // Function statements are eddy_sql's, whole; their syntax errors have the same shape.
        assert_eq!(
            parse("DROP FUNCTION f FORCE").unwrap(),
            Statement::Function(eddy_sql::Statement::DropFunction {
                name: "f".into(),
                if_exists: false,
                force: true
            })
        );
        assert_eq!(
            parse("CREATE FUNCTION f FORM 'x.wasm'")
                .unwrap_err()
                .to_string(),
            "syntax error at line 1, column 19: expected FROM, found 'FORM'"
        );
        assert_eq!(
            parse("TERMINATE CSAS_OUT_1").unwrap(),
            Statement::Terminate(Some("CSAS_OUT_1".into()))
        );
        assert_eq!(
            parse("PRINT 'Car-Sensors' FROM BEGINNING LIMIT 5;").unwrap(),
            Statement::Print {
                topic: "Car-Sensors".into(),
                from_beginning: true,
                limit: Some(5)
            }
        );
        assert_eq!(
            parse("print cars").unwrap(),
            Statement::Print {
                topic: "cars".into(),
                from_beginning: false,
                limit: None
            }
        );
        assert_eq!(
            parse("SET 'auto.offset.reset' = 'earliest';").unwrap(),
            Statement::Set {
                key: "auto.offset.reset".into(),
                value: "earliest".into()
            }
        );
    }

    #[test]
    fn source_streams_and_tables_parse_as_read_only() {
        let s =
            parse("CREATE SOURCE TABLE t (id INT PRIMARY KEY, v VARCHAR) WITH (kafka_topic='t')")
                .unwrap();
        assert!(
            matches!(
                &s,
                Statement::CreateSource { kind: Kind::Table, read_only: true, name, .. } if name == "t"
            ),
            "{s:?}"
        );
        let s = parse("CREATE STREAM s (v INT) WITH (kafka_topic='s')").unwrap();
        assert!(
            matches!(
                &s,
                Statement::CreateSource {
                    read_only: false,
                    ..
                }
            ),
            "{s:?}"
        );
        let s =
            parse("CREATE OR REPLACE SOURCE STREAM input (v INT) WITH (kafka_topic='s')").unwrap();
        assert!(
            matches!(
                &s,
                Statement::CreateSource {
                    read_only: true,
                    or_replace: true,
                    ..
                }
            ),
            "{s:?}"
        );
        assert_eq!(
            parse("CREATE SOURCE TABLE t WITH (kafka_topic='o') AS SELECT a FROM s")
                .unwrap_err()
                .to_string(),
            "syntax error: a SOURCE TABLE is read from a topic, not written by a query: use \
             CREATE TABLE … AS SELECT"
        );
    }

    #[test]
    fn errors_point_at_the_token() {
        let e = parse("CREATE STREAM s (a NUMBER) WITH (kafka_topic='t')").unwrap_err();
        assert_eq!(
            e.to_string(),
            "syntax error at line 1, column 20: expected a type (BOOLEAN, INT, BIGINT, DOUBLE, \
             DECIMAL(p, s), VARCHAR, BYTES, TIMESTAMP, DATE, TIME, ARRAY<…>, MAP<VARCHAR, …> or \
             STRUCT<…>), found 'NUMBER'"
        );
        let e = parse("CREATE TABLE t (a INT KEY)").unwrap_err();
        assert!(e.to_string().contains("PRIMARY KEY"), "{e}");
    }

    fn column_types(sql: &str) -> Result<Vec<DataType>> {
        match parse(sql)? {
            Statement::CreateSource { columns, .. } => {
                Ok(columns.into_iter().map(|c| c.data_type).collect())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_nested_and_parameterised_types() {
        let types = column_types(
            "CREATE STREAM s (a ARRAY<ARRAY<INT>>, b MAP<STRING, ARRAY<BIGINT>>, \
             c STRUCT<X INT, y STRUCT<z VARCHAR>>, d DECIMAL(10, 2), e BYTES, \
             f ARRAY<ARRAY<ARRAY<DOUBLE>>>, g STRUCT<>)",
        )
        .unwrap();
        assert_eq!(
            types,
            vec![
                DataType::new_list(DataType::new_list(DataType::Int32, true), true),
                map_type(DataType::new_list(DataType::Int64, true)),
                DataType::Struct(
                    vec![
                        Field::new("x", DataType::Int32, true),
                        Field::new(
                            "y",
                            DataType::Struct(vec![Field::new("z", DataType::Utf8, true)].into()),
                            true
                        ),
                    ]
                    .into()
                ),
                DataType::Decimal128(10, 2),
                DataType::Binary,
                DataType::new_list(
                    DataType::new_list(DataType::new_list(DataType::Float64, true), true),
                    true
                ),
                DataType::Struct(Vec::<Field>::new().into()),
            ]
        );
    }

    #[test]
    fn bad_types_are_named() {
        let error = |sql| column_types(sql).unwrap_err().to_string();
        assert_eq!(
            error("CREATE STREAM s (m MAP<INT, INT>)"),
            "syntax error at line 1, column 24: expected VARCHAR (a MAP's keys are strings, as in \
             ksqlDB), found 'INT'"
        );
        assert_eq!(
            error("CREATE STREAM s (d DECIMAL(40, 2))"),
            "syntax error at line 1, column 28: expected a DECIMAL precision (1 to 38), found '40'"
        );
        assert_eq!(
            error("CREATE STREAM s (d DECIMAL(4, 5))"),
            "syntax error at line 1, column 31: expected a DECIMAL scale (0 to the precision, 4), \
             found '5'"
        );
        assert_eq!(
            error("CREATE STREAM s (a ARRAY<INT)"),
            "syntax error at line 1, column 29: expected '>', found ')'"
        );
        assert_eq!(
            error("CREATE STREAM s (a STRUCT<x INT, x INT>)"),
            "syntax error at line 1, column 34: expected a field name not used before in this \
             STRUCT, found 'x'"
        );
        // `>>>` after two opened types is one `>` too many.
        assert!(error("CREATE STREAM s (a ARRAY<ARRAY<INT>>>)").contains("found '>'"));
    }
}
