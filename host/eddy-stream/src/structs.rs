//! ksqlDB's struct and map syntax as DataFusion's, rewritten in the statement text before
//! anything plans it: the dereference `s->field` as `s['field']`, the constructor
//! `STRUCT(a := 1, b := 'x')` as `named_struct('a', 1, 'b', 'x')`, and the constructor
//! `MAP('a' := 1, 'b' := 2)` as `make_map('a', 1, 'b', 2)`.

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::statement::Tokens;

/// `sql` with each `->field` replaced by `['field']`, each `STRUCT(` that names its fields by
/// `named_struct(`, and each `field :=` by `'field',` (field names lower-cased unless quoted, as
/// columns are); each `MAP(` whose entries are `key := value` by `make_map(`, and their `:=` by
/// `,`. Text that does not tokenize is left for the parser to report.
pub(crate) fn rewrite(sql: &str) -> String {
    let Ok(t) = Tokens::new(sql) else {
        return sql.to_string();
    };
    let token = |i: usize| t.tokens.get(i).map(|t| &t.token);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    // Parentheses open, and the depths at which rewritten constructors' fields sit: `name :=`
    // is a field only directly inside one. A map's entries are told apart by `true`.
    let mut depth = 0;
    let mut constructors: Vec<(usize, bool)> = Vec::new();
    // Whether the parentheses opening at token `open` hold a `:=` directly.
    let assigns_inside = |open: usize| {
        let mut inner = 0;
        for j in open..t.tokens.len() {
            match token(j) {
                Some(Token::LParen) => inner += 1,
                Some(Token::RParen) => {
                    inner -= 1;
                    if inner == 0 {
                        return false;
                    }
                }
                Some(Token::Assignment) if inner == 1 => return true,
                _ => {}
            }
        }
        false
    };
    for i in 0..t.tokens.len() {
        match token(i) {
            Some(Token::LParen) => depth += 1,
            Some(Token::RParen) => {
                if constructors.last().map(|c| c.0) == Some(depth) {
                    constructors.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        let in_constructor = constructors.last() == Some(&(depth, false));
        let in_map = constructors.last() == Some(&(depth, true));
        let (start, end, with) = match (token(i), token(i + 1), token(i + 2), token(i + 3)) {
            (Some(Token::Arrow), Some(Token::Word(w)), ..) => {
                let (name, len) = name_of(w);
                let end = t.offset(sql, i + 1) + len;
                (
                    t.offset(sql, i),
                    end,
                    format!("['{}']", name.replace('\'', "''")),
                )
            }
            (
                Some(Token::Word(s)),
                Some(Token::LParen),
                Some(Token::Word(_)),
                Some(Token::Assignment),
            ) if s.quote_style.is_none() && s.value.eq_ignore_ascii_case("STRUCT") => {
                constructors.push((depth + 1, false));
                let start = t.offset(sql, i);
                (start, start + s.value.len(), "named_struct".to_string())
            }
            (Some(Token::Word(s)), Some(Token::LParen), ..)
                if s.quote_style.is_none()
                    && s.value.eq_ignore_ascii_case("MAP")
                    && assigns_inside(i + 1) =>
            {
                constructors.push((depth + 1, true));
                let start = t.offset(sql, i);
                (start, start + s.value.len(), "make_map".to_string())
            }
            (Some(Token::Assignment), ..) if in_map => {
                let start = t.offset(sql, i);
                (start, start + ":=".len(), ",".to_string())
            }
            (Some(Token::Word(w)), Some(Token::Assignment), ..) if in_constructor => {
                let (name, _) = name_of(w);
                let end = t.offset(sql, i + 1) + ":=".len();
                (
                    t.offset(sql, i),
                    end,
                    format!("'{}',", name.replace('\'', "''")),
                )
            }
            _ => continue,
        };
        if start < copied || end > sql.len() {
            continue;
        }
        out.push_str(&sql[copied..start]);
        out.push_str(&with);
        copied = end;
    }
    out.push_str(&sql[copied..]);
    out
}

/// A field's name as DataFusion stores it (lower-cased unless quoted) and its length in the text.
fn name_of(w: &datafusion::sql::sqlparser::tokenizer::Word) -> (String, usize) {
    match w.quote_style {
        Some(_) => (w.value.clone(), w.value.len() + 2),
        None => (w.value.to_lowercase(), w.value.len()),
    }
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

    #[test]
    fn map_constructors_become_make_map() {
        assert_eq!(
            rewrite("SELECT MAP('a' := 1, k := MAP('x' := v)), map(['a'], [f(b := 2)]) FROM t"),
            "SELECT make_map('a' , 1, k , make_map('x' , v)), map(['a'], [f(b := 2)]) FROM t"
        );
    }

    #[test]
    fn struct_constructors_become_named_struct() {
        assert_eq!(
            rewrite("SELECT STRUCT(A := 1, \"b\" := STRUCT(c := 'x := y')) AS s FROM t"),
            "SELECT named_struct('a', 1, 'b', named_struct('c', 'x := y')) AS s FROM t"
        );
        // A STRUCT type, or a constructor without names, stays as it is.
        for unchanged in [
            "CREATE STREAM s (p STRUCT<a INT>)",
            "SELECT struct(1, 2) FROM t",
            // Not a field: left for the parser to refuse.
            "SELECT a := 1, f(b := 2) FROM t",
            "SELECT 1) FROM t",
        ] {
            assert_eq!(rewrite(unchanged), unchanged);
        }
    }
}
