//! Bounds on what one statement may make the coordinator do, so that no statement can crash
//! it: a size limit on the text, a limit on the operators one statement chains, and planning
//! on a thread whose stack is large enough for any statement within those limits.
//!
//! Parsing, planning and optimizing walk expression trees recursively, and a chain such as
//! `1+1+…+1` or `a OR b OR …` is a tree as deep as the chain is long. DataFusion grows its own
//! stack where it recurses, but cloning, comparing and dropping such trees recurse in code that
//! does not, and on a 2 MiB runtime thread a few thousand terms overflowed the stack and
//! aborted the whole process. Nested parentheses and subqueries are bounded by the parser's
//! recursion limit.

use std::future::Future;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{CoordinatorError, Result};

/// Longest statement text accepted.
pub const MAX_STATEMENT_BYTES: usize = 16 << 20;

/// Most binary operators (arithmetic, comparison, AND, OR, `||`) and set operations (UNION,
/// EXCEPT, INTERSECT) one statement may hold: each can add a level to an expression or plan
/// tree. Long lists of values belong in `IN (…)` lists, which are flat.
pub const MAX_OPERATORS: usize = 10_000;

/// Stack of the threads statements are planned on (address space; only what is used is
/// backed by memory). Enough for [`MAX_OPERATORS`] levels in every phase of planning.
pub const PLANNING_STACK: usize = 512 << 20;

/// Refuses a statement too large or with too many chained operators, before it is parsed.
pub fn check_statement(sql: &str) -> Result<()> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(CoordinatorError::InvalidArgument(format!(
            "statement too large: {} bytes (the limit is {MAX_STATEMENT_BYTES})",
            sql.len()
        )));
    }
    // A text that does not tokenize is left to the parser, which reports it precisely.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let operators = tokens.iter().filter(|t| is_chaining(t)).count();
    if operators > MAX_OPERATORS {
        return Err(CoordinatorError::InvalidArgument(format!(
            "statement too deep: it chains {operators} operators (arithmetic, comparisons, \
             AND/OR, UNION) and the limit is {MAX_OPERATORS}; put long lists of values in an \
             IN (…) list"
        )));
    }
    Ok(())
}

fn is_chaining(token: &Token) -> bool {
    match token {
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::DuckIntDiv
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight => true,
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::MINUS
        ),
        _ => false,
    }
}

/// Runs the future `make` returns on a fresh thread with a [`PLANNING_STACK`] stack, inside
/// the current runtime, and returns its output.
pub async fn on_planning_thread<F, Fut, T>(make: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("floe-plan".into())
        .stack_size(PLANNING_STACK)
        .spawn(move || {
            let _ = tx.send(runtime.block_on(make()));
        })
        .map_err(|e| {
            CoordinatorError::ResourcesExhausted(format!("cannot start a planning thread: {e}"))
        })?;
    rx.await.map_err(|_| {
        CoordinatorError::Internal("the planning thread ended without an answer".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let ok = format!("SELECT {}", vec!["1"; 1000].join(" + "));
        check_statement(&ok).expect("1000 terms are fine");
        let deep = format!("SELECT {}", vec!["1"; MAX_OPERATORS + 2].join("+"));
        let err = check_statement(&deep).expect_err("too deep");
        assert!(err.to_string().contains("statement too deep"), "{err}");
        let ors = format!("SELECT 1 WHERE {}", vec!["a = 1"; 6000].join(" OR "));
        assert!(
            check_statement(&ors).is_err(),
            "6000 comparisons and 5999 ORs"
        );
        let unions = vec!["SELECT 1"; MAX_OPERATORS + 2].join(" UNION ALL ");
        assert!(check_statement(&unions).is_err());
        // Operators inside strings and comments do not count.
        let quoted = format!("SELECT '{}' -- {}", "+".repeat(50_000), "+".repeat(50_000));
        check_statement(&quoted).expect("quoted text is not an operator");
        // IN lists are flat.
        let list = format!("SELECT 1 WHERE a IN ({})", vec!["1"; 50_000].join(","));
        check_statement(&list).expect("an IN list of 50,000 values");
    }

    #[test]
    fn huge_statements_are_refused() {
        let huge = format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES));
        let err = check_statement(&huge).expect_err("too large");
        assert!(err.to_string().contains("statement too large"), "{err}");
    }
}
