//! The `PARTITIONED BY ( … )` clause: lifted out of a statement before DataFusion parses it (its
//! parser takes only Hive column definitions there), and its items read as Iceberg transforms.

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use iceberg::spec::Transform;

use super::invalid;
use crate::error::Result;

/// Takes `PARTITIONED BY ( … )` out of a statement: the statement without it, and the clause's
/// items as SQL text (none when absent).
pub fn take_partitioned_by(sql: &str) -> Result<(String, Vec<String>)> {
    let bytes = sql.as_bytes();
    // Compared byte-wise: a keyword match at a byte index inside a multi-byte character is
    // simply no match (slicing the `str` there would panic).
    let lower = sql.to_ascii_lowercase().into_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' => quote = Some(c),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        let at_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word && lower[i..].starts_with(b"partitioned") {
            let mut j = i + "partitioned".len();
            let skip_ws = |j: &mut usize| {
                while *j < bytes.len() && bytes[*j].is_ascii_whitespace() {
                    *j += 1;
                }
            };
            skip_ws(&mut j);
            if lower[j..].starts_with(b"by") {
                j += 2;
                skip_ws(&mut j);
                if bytes.get(j) == Some(&b'(') {
                    let (items, end) = split_parenthesized(sql, j)?;
                    let rest = format!("{} {}", &sql[..i], &sql[end..]);
                    return Ok((rest, items));
                }
            }
        }
        i += 1;
    }
    Ok((sql.to_string(), Vec::new()))
}

/// The comma-separated items of the parenthesized list opening at `open`, and where it ends.
fn split_parenthesized(sql: &str, open: usize) -> Result<(Vec<String>, usize)> {
    let bytes = sql.as_bytes();
    let mut depth = 0usize;
    let mut items = Vec::new();
    let mut start = open + 1;
    let mut quote: Option<u8> = None;
    for (k, &c) in bytes.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' => quote = Some(c),
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    let last = sql[start..k].trim();
                    if !last.is_empty() {
                        items.push(last.to_string());
                    }
                    return Ok((items, k + 1));
                }
            }
            b',' if depth == 1 => {
                items.push(sql[start..k].trim().to_string());
                start = k + 1;
            }
            _ => {}
        }
    }
    Err(invalid("PARTITIONED BY ( … ) is not closed"))
}

/// One item of PARTITIONED BY: its source column and Iceberg transform.
pub fn partition_field(item: &str) -> Result<(String, Transform)> {
    let bad = || {
        invalid(format!(
            "PARTITIONED BY item '{item}' is not a column, year|month|day|hour(col), \
             bucket(N, col) or truncate(W, col)"
        ))
    };
    let expr = Parser::new(&GenericDialect {})
        .try_with_sql(item)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| invalid(format!("PARTITIONED BY item '{item}': {e}")))?;
    let column_of = |e: &SqlExpr| match e {
        SqlExpr::Identifier(id) => Some(id.value.clone()),
        SqlExpr::CompoundIdentifier(ids) => ids.last().map(|i| i.value.clone()),
        _ => None,
    };
    if let Some(column) = column_of(&expr) {
        return Ok((column, Transform::Identity));
    }
    let SqlExpr::Function(function) = &expr else {
        return Err(bad());
    };
    let name = function.name.to_string().to_ascii_lowercase();
    let FunctionArguments::List(list) = &function.args else {
        return Err(bad());
    };
    let args: Vec<&SqlExpr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(bad()),
        })
        .collect::<Result<_>>()?;
    let number = |e: &SqlExpr| match e {
        SqlExpr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<u32>().ok().filter(|n| *n > 0),
            _ => None,
        },
        _ => None,
    };
    match (name.as_str(), args.as_slice()) {
        ("year" | "years", [c]) => Ok((column_of(c).ok_or_else(bad)?, Transform::Year)),
        ("month" | "months", [c]) => Ok((column_of(c).ok_or_else(bad)?, Transform::Month)),
        ("day" | "days" | "date", [c]) => Ok((column_of(c).ok_or_else(bad)?, Transform::Day)),
        ("hour" | "hours", [c]) => Ok((column_of(c).ok_or_else(bad)?, Transform::Hour)),
        ("identity", [c]) => Ok((column_of(c).ok_or_else(bad)?, Transform::Identity)),
        ("bucket" | "truncate", [a, b]) => {
            let (n, column) = match (number(a), number(b)) {
                (Some(n), None) => (n, column_of(b)),
                (None, Some(n)) => (n, column_of(a)),
                _ => (0, None),
            };
            let column = column.ok_or_else(bad)?;
            let transform = if name == "bucket" {
                Transform::Bucket(n)
            } else {
                Transform::Truncate(n)
            };
            Ok((column, transform))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioned_by_is_taken_out_with_its_items() {
        let (rest, items) = take_partitioned_by(
            "CREATE TABLE a.b (ts TIMESTAMP, u BIGINT, c VARCHAR) \
             PARTITIONED BY (day(ts), bucket(16, u), truncate(4, c), c) AS SELECT 'x, (y)'",
        )
        .expect("parses");
        assert_eq!(items, ["day(ts)", "bucket(16, u)", "truncate(4, c)", "c"]);
        assert!(!rest.to_lowercase().contains("partitioned"), "{rest}");
        assert!(rest.contains("AS SELECT 'x, (y)'"), "{rest}");
    }

    #[test]
    fn non_ascii_text_outside_quotes_is_scanned_safely() {
        let (rest, items) = take_partitioned_by(
            "CREATE TABLE a.b (stadt VARCHAR) /* Straße */ PARTITIONED BY (stadt) AS SELECT 1 AS ü",
        )
        .expect("parses");
        assert_eq!(items, ["stadt"]);
        assert!(rest.ends_with("AS SELECT 1 AS ü"), "{rest}");
        let (rest, items) = take_partitioned_by("SELECT 1 AS größe").expect("parses");
        assert!(items.is_empty());
        assert_eq!(rest, "SELECT 1 AS größe");
    }

    #[test]
    fn partitioned_by_inside_a_string_is_left_alone() {
        let sql = "SELECT 'partitioned by (x)' AS s";
        let (rest, items) = take_partitioned_by(sql).expect("parses");
        assert!(items.is_empty());
        assert_eq!(rest, sql);
    }

    #[test]
    fn transforms_in_spark_and_trino_argument_order() {
        let f = |s: &str| partition_field(s).expect(s);
        assert_eq!(f("city"), ("city".into(), Transform::Identity));
        assert_eq!(f("days(ts)"), ("ts".into(), Transform::Day));
        assert_eq!(f("month(ts)"), ("ts".into(), Transform::Month));
        assert_eq!(
            f("bucket(16, user_id)"),
            ("user_id".into(), Transform::Bucket(16))
        );
        assert_eq!(
            f("bucket(user_id, 16)"),
            ("user_id".into(), Transform::Bucket(16))
        );
        assert_eq!(
            f("truncate(4, city)"),
            ("city".into(), Transform::Truncate(4))
        );
        assert!(partition_field("bucket(0, x)").is_err());
        assert!(partition_field("lower(x)").is_err());
    }
}
