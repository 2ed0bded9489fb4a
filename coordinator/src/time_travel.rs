//! Time travel: a table reference read at a snapshot, a tag or branch, or an instant.
//!
//! ```sql
//! SELECT … FROM dwd.events FOR VERSION AS OF 4908442218669832513      -- a snapshot id (Trino)
//! SELECT … FROM dwd.events VERSION AS OF 'audit-2024-06'              -- a tag or branch (Spark)
//! SELECT … FROM dwd.events FOR TIMESTAMP AS OF TIMESTAMP '2024-06-14 00:00:00'
//! ```
//!
//! The parser does not know these clauses, so before parsing each one is folded into the
//! table's name (`events#snapshot=…`, `#ref=…`, `#at=<epoch ms>`), which
//! [`floe_catalog::provider`] resolves to the table at that point, with that snapshot's
//! schema; the table keeps its own name as alias. A timestamp without a zone is read in the
//! session's time zone. Works on any table reference, joins included.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use floe_catalog::provider::{TimeTravel, TIME_TRAVEL_SEPARATOR};

use crate::error::{CoordinatorError, Result};

/// `sql` with its time-travel clauses folded into table names; unchanged when it has none.
pub fn fold(sql: &str, time_zone: Option<&str>) -> Result<String> {
    let upper = sql.to_ascii_uppercase();
    if !upper.contains(" AS OF") {
        return Ok(sql.to_string());
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(sql.to_string());
    };
    // Only the tokens that matter (no whitespace or comments), with their places.
    let words: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let offsets = LineOffsets::new(sql);
    let mut edits: Vec<(usize, usize, String)> = vec![];
    let mut i = 0;
    while i < words.len() {
        let Some((start, end, point)) = clause_at(&words, i, time_zone)? else {
            i += 1;
            continue;
        };
        // The table's last name part is the token before the clause.
        let name = match start.checked_sub(1).map(|j| &words[j].token) {
            Some(Token::Word(w)) => (start - 1, w.value.clone()),
            _ => {
                return Err(CoordinatorError::InvalidArgument(
                    "a time travel clause (… AS OF …) must follow a table name".into(),
                ))
            }
        };
        let aliased = match words.get(end + 1).map(|t| &t.token) {
            Some(Token::Word(w)) => w.keyword == Keyword::AS || w.keyword == Keyword::NoKeyword,
            _ => false,
        };
        let folded = format!("{}{TIME_TRAVEL_SEPARATOR}{}", name.1, point.encode());
        let mut replacement = quoted(&folded);
        if !aliased {
            replacement.push_str(" AS ");
            replacement.push_str(&quoted(&name.1));
        }
        let start = offsets.at(words[name.0].span.start)?;
        let stop = offsets.at(words[end].span.end)?;
        edits.push((start, stop, replacement));
        i = end + 1;
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut copied = 0;
    for (start, stop, replacement) in edits {
        if start < copied || stop < start || stop > sql.len() {
            return Err(CoordinatorError::InvalidArgument(
                "time travel clauses overlap: give each table reference one".into(),
            ));
        }
        out.push_str(&sql[copied..start]);
        out.push_str(&replacement);
        copied = stop;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// A clause starting at `words[i]`: where its kind keyword is, where it ends, and the point.
fn clause_at(
    words: &[&TokenWithSpan],
    i: usize,
    time_zone: Option<&str>,
) -> Result<Option<(usize, usize, TimeTravel)>> {
    let keyword = |j: usize| match words.get(j).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    };
    let kind_at = if keyword(i) == Some(Keyword::FOR) {
        i + 1
    } else {
        i
    };
    let kind = keyword(kind_at);
    let is_kind = matches!(
        kind,
        Some(Keyword::VERSION | Keyword::TIMESTAMP | Keyword::SYSTEM_TIME)
    );
    if !is_kind
        || keyword(kind_at + 1) != Some(Keyword::AS)
        || keyword(kind_at + 2) != Some(Keyword::OF)
    {
        return Ok(None);
    }
    // A FOR clause's table name is before the FOR.
    let clause_start = i;
    let mut at = kind_at + 3;
    let bad = |what: &str| {
        CoordinatorError::InvalidArgument(format!(
            "time travel: {what} (write VERSION AS OF <snapshot id or 'tag'>, or TIMESTAMP AS \
             OF TIMESTAMP '2024-06-14 00:00:00')"
        ))
    };
    let point = if kind == Some(Keyword::VERSION) {
        match words.get(at).map(|t| &t.token) {
            Some(Token::Number(n, _)) => TimeTravel::Snapshot(
                n.parse()
                    .map_err(|_| bad(&format!("'{n}' is not a snapshot id")))?,
            ),
            Some(Token::SingleQuotedString(s)) => TimeTravel::Ref(s.clone()),
            _ => {
                return Err(bad(
                    "a snapshot id or a quoted tag or branch name must follow",
                ))
            }
        }
    } else {
        if keyword(at) == Some(Keyword::TIMESTAMP) {
            at += 1;
        }
        match words.get(at).map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => TimeTravel::At(epoch_millis(s, time_zone)?),
            Some(Token::Number(n, _)) => TimeTravel::At(
                n.parse()
                    .map_err(|_| bad(&format!("'{n}' is not milliseconds since the epoch")))?,
            ),
            _ => return Err(bad("a timestamp literal must follow")),
        }
    };
    Ok(Some((clause_start, at, point)))
}

/// A timestamp literal as milliseconds since the epoch; one without a zone or offset is read
/// in `time_zone` (UTC when unset).
fn epoch_millis(text: &str, time_zone: Option<&str>) -> Result<i64> {
    let zone = time_zone.unwrap_or("+00:00");
    let tz: arrow::array::timezone::Tz = zone.parse().map_err(|e| {
        CoordinatorError::InvalidArgument(format!("time zone '{zone}' is not valid: {e}"))
    })?;
    arrow::compute::kernels::cast_utils::string_to_datetime(&tz, text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            CoordinatorError::InvalidArgument(format!(
                "time travel: '{text}' is not a timestamp: {e}"
            ))
        })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Byte offsets of (line, column) locations (columns count characters).
struct LineOffsets<'a> {
    sql: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(sql: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineOffsets { sql, starts }
    }

    fn at(&self, location: Location) -> Result<usize> {
        let lost = || CoordinatorError::Internal(format!("no offset for {location:?}"));
        let line_start = *self
            .starts
            .get((location.line as usize).checked_sub(1).ok_or_else(lost)?)
            .ok_or_else(lost)?;
        let column = (location.column as usize).checked_sub(1).ok_or_else(lost)?;
        let rest = &self.sql[line_start..];
        Ok(line_start
            + rest
                .char_indices()
                .nth(column)
                .map(|(i, _)| i)
                .unwrap_or(rest.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn clauses_fold_into_table_names() {
        assert_eq!(fold("SELECT 1", None).expect("ok"), "SELECT 1");
        assert_eq!(
            fold("SELECT count(*) FROM s.t VERSION AS OF 42", None).expect("ok"),
            "SELECT count(*) FROM s.\"t#snapshot=42\" AS \"t\""
        );
        assert_eq!(
            fold(
                "SELECT * FROM s.t FOR VERSION AS OF 'audit' x JOIN u ON x.a = u.a",
                None
            )
            .expect("ok"),
            "SELECT * FROM s.\"t#ref=audit\" x JOIN u ON x.a = u.a"
        );
        assert_eq!(
            fold(
                "SELECT * FROM t FOR TIMESTAMP AS OF TIMESTAMP '2024-01-01 00:00:00' AS a",
                None
            )
            .expect("ok"),
            "SELECT * FROM \"t#at=1704067200000\" AS a"
        );
        assert_eq!(
            fold(
                "SELECT * FROM t FOR TIMESTAMP AS OF '2024-01-01 01:00:00'",
                Some("+01:00")
            )
            .expect("ok"),
            "SELECT * FROM \"t#at=1704067200000\" AS \"t\""
        );
        // Not a clause: left alone.
        assert_eq!(
            fold("SELECT CAST(x AS TIMESTAMP) AS of FROM t", None).expect("ok"),
            "SELECT CAST(x AS TIMESTAMP) AS of FROM t"
        );
        assert!(fold("SELECT * FROM t VERSION AS OF", None).is_err());
        assert!(fold("SELECT * FROM t VERSION AS OF 1 VERSION AS OF 2", None).is_err());
        assert!(fold("VERSION AS OF 1", None).is_err());
        assert!(fold("SELECT * FROM t FOR TIMESTAMP AS OF 'yesterday'", None).is_err());
    }
}
