//! ksqlDB's session variables: `DEFINE name = 'value';`, `UNDEFINE name;`, `SHOW VARIABLES;`,
//! `${name}` in later statements, and a request's `sessionVariables` object.
//!
//! Variables live for one request, as in ksqlDB's REST API: one client's `DEFINE` never reaches
//! another client, nor this client's next request.

use serde_json::{json, Map, Value};

use eddy_stream::Statement;

use crate::error::{code, ApiError};

/// The variables of one request, in definition order (SHOW VARIABLES lists them so).
#[derive(Debug, Default)]
pub(crate) struct Variables {
    defined: Vec<(String, String)>,
}

/// What a statement is, as far as variables go.
pub(crate) enum Step {
    /// DEFINE / UNDEFINE / SHOW VARIABLES, done here; the entity to answer, if any.
    Handled(Option<Value>),
    /// Any other statement, its `${name}` references replaced, to run, and what parsing it
    /// gave (so the caller need not parse it again).
    Run {
        /// The statement's text.
        text: String,
        /// It parsed, or why not.
        parsed: eddy_stream::Result<Statement>,
    },
}

impl Variables {
    /// The request's `sessionVariables` object (values: strings, numbers or booleans).
    pub(crate) fn from_request(request: &Map<String, Value>) -> Result<Variables, ApiError> {
        let mut variables = Variables::default();
        match request.get("sessionVariables") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let value = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => value.to_string(),
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "sessionVariables.{name} must be a string, number or boolean, not {other}"
                            )))
                        }
                    };
                    if !is_name(name) {
                        return Err(ApiError::bad_request(format!(
                            "'{name}' is not a variable name (a letter or _, then letters, digits or _)"
                        )));
                    }
                    variables.define(name, value);
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "\"sessionVariables\" must be a JSON object, not {other}"
                )))
            }
        }
        Ok(variables)
    }

    fn define(&mut self, name: &str, value: String) {
        match self
            .defined
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.defined.push((name.to_string(), value)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.defined
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Handles `statement` if it is about variables; otherwise substitutes into it.
    pub(crate) fn step(&mut self, statement: &str, shown: &str) -> Result<Step, ApiError> {
        // Substituted first: `${name}` may stand anywhere, even in a DEFINE's value. A statement
        // that does not parse goes to the caller with its error, which it reports.
        let text = self.substitute(statement, shown)?;
        match eddy_stream::parse(&text) {
            Ok(Statement::Define { name, value }) => {
                self.define(&name, value);
                Ok(Step::Handled(None))
            }
            Ok(Statement::Undefine(name)) => {
                let before = self.defined.len();
                self.defined.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                if self.defined.len() == before {
                    return Ok(Step::Handled(Some(json!({
                        "@type": "warning_entity",
                        "statementText": shown,
                        "message": format!("Cannot undefine variable '{name}' which was never defined"),
                        "warnings": [],
                    }))));
                }
                Ok(Step::Handled(None))
            }
            Ok(Statement::ShowVariables) => {
                let variables: Vec<Value> = self
                    .defined
                    .iter()
                    .map(|(name, value)| json!({"name": name, "value": value}))
                    .collect();
                Ok(Step::Handled(Some(json!({
                    "@type": "variables",
                    "statementText": shown,
                    "variables": variables,
                    "warnings": [],
                }))))
            }
            parsed => Ok(Step::Run { text, parsed }),
        }
    }

    /// `statement` with each `${name}` replaced by its value; an undefined name is an error.
    pub(crate) fn substitute(&self, statement: &str, shown: &str) -> Result<String, ApiError> {
        let mut out = String::with_capacity(statement.len());
        let mut rest = statement;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[at..]);
                return Ok(out);
            };
            let name = &after[..end];
            match self.get(name.trim()) {
                Some(value) => out.push_str(value),
                None => {
                    return Err(ApiError::statement(
                        code::BAD_STATEMENT,
                        format!("Unable to substitute variable '{name}': it is not defined (DEFINE {name} = 'value';)"),
                        shown,
                    ))
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(variables: &mut Variables, statement: &str) -> Result<Option<String>, u32> {
        match variables.step(statement, statement) {
            Ok(Step::Run { text, .. }) => Ok(Some(text)),
            Ok(Step::Handled(_)) => Ok(None),
            Err(e) => Err(e.code()),
        }
    }

    #[test]
    fn define_substitute_undefine() {
        let mut v = Variables::default();
        assert_eq!(run(&mut v, "DEFINE topic = 'it''s';"), Ok(None));
        assert_eq!(run(&mut v, "define Cols = 'a INT'"), Ok(None));
        assert_eq!(
            run(
                &mut v,
                "CREATE STREAM s (${cols}) WITH (kafka_topic='${TOPIC}');"
            ),
            Ok(Some(
                "CREATE STREAM s (a INT) WITH (kafka_topic='it's');".into()
            ))
        );
        match v.step("SHOW VARIABLES;", "SHOW VARIABLES;") {
            Ok(Step::Handled(Some(entity))) => assert_eq!(
                entity["variables"],
                json!([{"name": "topic", "value": "it's"}, {"name": "Cols", "value": "a INT"}])
            ),
            _ => panic!("SHOW VARIABLES"),
        }
        assert_eq!(run(&mut v, "UNDEFINE topic;"), Ok(None));
        assert_eq!(run(&mut v, "SELECT '${topic}';"), Err(code::BAD_STATEMENT));
        // A malformed DEFINE runs as a statement, whose syntax error the parser reports.
        for (bad, expected) in [
            (
                "DEFINE x = unquoted;",
                "a variable's value in quotes (DEFINE name = 'value')",
            ),
            ("DEFINE 1x = 'a';", "a variable name"),
        ] {
            assert_eq!(run(&mut v, bad), Ok(Some(bad.into())));
            let error = eddy_stream::parse(bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        // No variable reference: the text is left exactly as it was.
        assert_eq!(
            run(&mut v, "SELECT '$' || '{' ;"),
            Ok(Some("SELECT '$' || '{' ;".into()))
        );
    }

    #[test]
    fn session_variables_come_from_the_request() {
        let request = json!({"sessionVariables": {"a": "x", "n": 3, "b": true}});
        let v = Variables::from_request(request.as_object().unwrap()).unwrap();
        assert_eq!(v.substitute("${a}${n}${b}", "").unwrap(), "x3true");
        let request = json!({"sessionVariables": {"a": [1]}});
        assert!(Variables::from_request(request.as_object().unwrap()).is_err());
        let request = json!({"sessionVariables": "a"});
        assert!(Variables::from_request(request.as_object().unwrap()).is_err());
    }
}
