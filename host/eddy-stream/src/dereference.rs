//! ksqlDB's struct dereference, `s->field`, as DataFusion's field access `s['field']`, rewritten
//! in the statement text before anything plans it.

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::statement::Tokens;

/// `sql` with each `->field` replaced by `['field']` (lower-cased unless quoted, as columns
/// are); text that does not tokenize is left for the parser to report.
pub(crate) fn rewrite(sql: &str) -> String {
    let Ok(t) = Tokens::new(sql) else {
        return sql.to_string();
    };
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for i in 0..t.tokens.len().saturating_sub(1) {
        let (Token::Arrow, Token::Word(w)) = (&t.tokens[i].token, &t.tokens[i + 1].token) else {
            continue;
        };
        let start = t.offset(sql, i);
        let word = t.offset(sql, i + 1);
        let (name, len) = match w.quote_style {
            Some(_) => (w.value.clone(), w.value.len() + 2),
            None => (w.value.to_lowercase(), w.value.len()),
        };
        let end = word + len;
        if start < copied || end > sql.len() {
            continue;
        }
        out.push_str(&sql[copied..start]);
        out.push_str(&format!("['{}']", name.replace('\'', "''")));
        copied = end;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn arrows_become_field_access() {
        assert_eq!(
            rewrite("SELECT pos->X, a -> b->\"C\" FROM s WHERE t = '->x'"),
            "SELECT pos['x'], a ['b']['C'] FROM s WHERE t = '->x'"
        );
        assert_eq!(
            rewrite("SELECT 'é', p->x\nFROM s"),
            "SELECT 'é', p['x']\nFROM s"
        );
        assert_eq!(rewrite("SELECT a - > b"), "SELECT a - > b");
    }
}
