//! SQL text as tokens with their byte offsets, for the rewrites made before parsing (lambdas,
//! time units, `EXPLODE`): they find what to change by token and splice the text by offset.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The tokens of `sql`, whitespace left out, each with the byte offset it starts at (the text's
/// length when its position is not in the text); `None` when `sql` does not tokenize.
pub(crate) fn with_offsets(sql: &str) -> Option<Vec<(Token, usize)>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    // Byte offsets of each line's start, for the tokens' line/column spans.
    let lines: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    Some(
        tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| {
                let at = t.span.start;
                let line = lines[(at.line as usize).saturating_sub(1).min(lines.len() - 1)];
                let offset = sql[line..]
                    .char_indices()
                    .nth((at.column as usize).saturating_sub(1))
                    .map_or(sql.len(), |(b, _)| line + b);
                (t.token, offset)
            })
            .collect(),
    )
}
