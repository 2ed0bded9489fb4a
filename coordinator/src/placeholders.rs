//! JDBC-style `?` parameters. BI tools and the JDBC, ODBC and ADBC drivers send prepared
//! statements with `?` markers; DataFusion names every `?` alike, so two of them conflict.
//! Before parsing, each `?` marker (as the SQL tokenizer sees it: not inside a string, a
//! quoted identifier or a comment) becomes the positional `$1`, `$2`, … in order.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// `sql` with its `?` markers numbered; unchanged when it has none (or does not tokenize:
/// the parser then reports the error).
pub fn number_question_marks(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut copied = 0;
    let mut n = 0;
    for token in tokens {
        if token.token != Token::Placeholder("?".into()) {
            continue;
        }
        let start = token.span.start;
        let Some(line_start) = line_starts.get((start.line as usize).saturating_sub(1)) else {
            return sql.to_string();
        };
        let Some((offset, '?')) = sql[*line_start..]
            .char_indices()
            .nth((start.column as usize).saturating_sub(1))
        else {
            return sql.to_string();
        };
        let at = line_start + offset;
        n += 1;
        out.push_str(&sql[copied..at]);
        out.push_str(&format!("${n}"));
        copied = at + 1;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::number_question_marks as n;

    #[test]
    fn markers_are_numbered_in_order() {
        assert_eq!(n("SELECT 1"), "SELECT 1");
        assert_eq!(
            n("SELECT a FROM t WHERE a = ? AND b >= ?"),
            "SELECT a FROM t WHERE a = $1 AND b >= $2"
        );
        assert_eq!(
            n("SELECT ?,\n  é, ? FROM t\nWHERE x IN (?, ?)"),
            "SELECT $1,\n  é, $2 FROM t\nWHERE x IN ($3, $4)"
        );
    }

    #[test]
    fn question_marks_in_strings_identifiers_and_comments_stay() {
        assert_eq!(
            n("SELECT 'what?' AS \"why?\", ? -- really?\nFROM t /* ok? */ WHERE c = ?"),
            "SELECT 'what?' AS \"why?\", $1 -- really?\nFROM t /* ok? */ WHERE c = $2"
        );
        assert_eq!(n("SELECT 'a?b'"), "SELECT 'a?b'");
    }
}
