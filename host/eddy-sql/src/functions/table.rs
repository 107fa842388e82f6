//! ksqlDB's table function `EXPLODE`: DataFusion's `UNNEST` under ksqlDB's name. Each element
//! of the array becomes a row (an empty or NULL array gives none), and several in one `SELECT`
//! go side by side, the shorter padded with NULLs, as in ksqlDB.

use datafusion::sql::sqlparser::tokenizer::Token;

/// `sql` with each call `EXPLODE(…)` written `UNNEST(…)`, which DataFusion plans as a table
/// function; quoted names, string literals and comments are left as they are.
pub fn explode_as_unnest(sql: &str) -> String {
    if !sql.to_ascii_lowercase().contains("explode") {
        return sql.to_string();
    }
    let Some(tokens) = super::tokens::with_offsets(sql) else {
        return sql.to_string();
    };
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for pair in tokens.windows(2) {
        let (Token::Word(w), Token::LParen) = (&pair[0].0, &pair[1].0) else {
            continue;
        };
        if w.quote_style.is_some() || !w.value.eq_ignore_ascii_case("explode") {
            continue;
        }
        let start = pair[0].1;
        let end = start + w.value.len();
        if start < copied
            || !sql
                .get(start..end)
                .is_some_and(|s| s.eq_ignore_ascii_case("explode"))
        {
            continue;
        }
        out.push_str(&sql[copied..start]);
        out.push_str("UNNEST");
        copied = end;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::explode_as_unnest;

    #[test]
    fn explode_calls_become_unnest_and_nothing_else_changes() {
        assert_eq!(
            explode_as_unnest("SELECT id, EXPLODE(a) AS x, explode (b), 'explode(c)' FROM s"),
            "SELECT id, UNNEST(a) AS x, UNNEST (b), 'explode(c)' FROM s"
        );
        assert_eq!(
            explode_as_unnest("SELECT \"explode\"(a), exploded FROM s"),
            "SELECT \"explode\"(a), exploded FROM s"
        );
    }
}
