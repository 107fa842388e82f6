//! Splits a script into statements at `;`, respecting quotes and comments.

/// The statements of `script` with their 1-based starting line; blank or comment-only pieces
/// are dropped.
pub fn split_statements(script: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut has_code = false;
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                // Quoted text runs to the matching quote; a doubled quote is an escape.
                has_code = true;
                current.push(c);
                while let Some(q) = chars.next() {
                    current.push(q);
                    if q == '\n' {
                        line += 1;
                    }
                    if q == c {
                        if chars.peek() == Some(&c) {
                            current.push(chars.next().unwrap_or(c));
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        line += 1;
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for q in chars.by_ref() {
                    if q == '\n' {
                        line += 1;
                        current.push('\n');
                    }
                    if prev == '*' && q == '/' {
                        break;
                    }
                    prev = q;
                }
                current.push(' ');
            }
            ';' => {
                if has_code {
                    out.push((start_line, current.trim().to_string()));
                }
                current.clear();
                has_code = false;
            }
            _ => {
                if c == '\n' {
                    line += 1;
                }
                if !c.is_whitespace() && !has_code {
                    has_code = true;
                    start_line = line;
                }
                current.push(c);
            }
        }
    }
    if has_code {
        out.push((start_line, current.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let script = "-- header; not a statement\nSELECT 'a;b', \"x;\" FROM t;\n\n/* c; */ SELECT 2\n;  -- trailing\n";
        assert_eq!(
            split_statements(script),
            vec![
                (2, "SELECT 'a;b', \"x;\" FROM t".to_string()),
                (4, "SELECT 2".to_string()),
            ]
        );
    }

    #[test]
    fn keeps_doubled_quotes_and_last_statement_without_semicolon() {
        assert_eq!(
            split_statements("SELECT 'it''s; fine'"),
            vec![(1, "SELECT 'it''s; fine'".to_string())]
        );
        assert!(split_statements("  -- only a comment\n").is_empty());
    }
}
