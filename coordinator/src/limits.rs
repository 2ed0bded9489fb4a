//! Bounds on what one statement may make the coordinator do, so that no statement can crash
//! it: a size limit on the text, a limit on the operators one statement chains, and planning
//! on a thread whose stack is large enough for any statement within those limits (except a
//! small statement's, planned where it arrived: see [`Planning`]).
//!
//! Parsing, planning and optimizing walk expression trees recursively, and a chain such as
//! `1+1+…+1` or `a OR b OR …` is a tree as deep as the chain is long. DataFusion grows its own
//! stack where it recurses, but cloning, comparing and dropping such trees recurse in code that
//! does not, and on a 2 MiB runtime thread a few thousand terms overflowed the stack and
//! aborted the whole process. Nested parentheses and subqueries are bounded by the parser's
//! recursion limit.

use std::future::Future;

use futures::FutureExt;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{CoordinatorError, Result};

/// Longest statement text accepted.
pub const MAX_STATEMENT_BYTES: usize = 16 << 20;

/// Most operators (arithmetic, comparison, AND, OR, `||`, set operations) one statement may
/// hold: each can add a level to an expression or plan tree. Long lists of values belong in
/// `IN (…)` lists, which are flat.
pub const MAX_OPERATORS: usize = 10_000;

/// Most arithmetic and bitwise operators (`+ - * / % || & | ^ << >>`) one statement may hold.
/// Planning time grows with the square of such a chain (measured, release build, through ADBC:
/// 250 terms 0.1 s, 500 terms 0.4–0.5 s, 1,000 terms 1.6–2.2 s; before the checked-arithmetic
/// rule typed a chain in one pass it grew with the cube, and 1,000 terms took 164 s).
pub const MAX_ARITHMETIC: usize = 1_000;

/// Most set operations (UNION, EXCEPT, INTERSECT) one statement may hold (planning time grows
/// with the square of their number too).
pub const MAX_SET_OPERATIONS: usize = 1_000;

/// Most parts one dotted name may have (`catalog.schema.table.column.field…`). The SQL parser
/// (sqlparser 0.61) backtracks on a dotted chain and its time doubles with every part: a
/// 125-byte statement holding one such chain of about 24 parts took 13.7 s to be refused (found by
/// the `check_sql` fuzz target). Real names have a handful of parts; at 12 the parser's
/// detours cost microseconds.
pub const MAX_NAME_PARTS: usize = 12;

/// Deepest one statement may nest subscripts (`a[b[c[d]]]`), parentheses inside a subscript
/// counting as levels too. The parser's time for chains inside unclosed brackets triples with
/// every level from the fifth (the check_sql fuzz target's 434 bytes at ten levels took 14 s;
/// seven levels 1.45 s, four 0.06 s, in a debug build), and parentheses within them nest its
/// backtracking as deeply (the same target's `F[NT.IaUN&CTE(D&TNT.Ia…`, four brackets and
/// four parentheses inside them).
pub const MAX_SUBSCRIPT_DEPTH: usize = 4;

/// Stack of the threads statements are planned on (address space; only what is used is
/// backed by memory). Enough for [`MAX_OPERATORS`] levels in every phase of planning.
pub const PLANNING_STACK: usize = 512 << 20;

/// How a statement that passed [`check_statement`] is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// On the thread that asked: one query block over at most one table with a few operators
    /// (a point lookup, `SELECT 1`, a dashboard's filter), whose trees are a few levels deep
    /// (unary chains such as `NOT NOT …` are bounded by the parser's recursion limit). The two
    /// thread hops saved are 14 % of a `SELECT 1`'s time on the server (0.94 → 0.81 ms).
    Here,
    /// On a planning thread (see [`on_planning_thread`]).
    OnPlanningThread,
}

/// Most operators a statement planned on the calling thread may hold.
const SMALL_OPERATORS: usize = 16;

/// Longest statement planned on the calling thread.
const SMALL_BYTES: usize = 4096;

/// Refuses a statement too large or with too many chained operators, before it is parsed, and
/// says where it is planned.
pub fn check_statement(sql: &str) -> Result<Planning> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(CoordinatorError::InvalidArgument(format!(
            "statement too large: {} bytes (the limit is {MAX_STATEMENT_BYTES})",
            sql.len()
        )));
    }
    // A text that does not tokenize is left to the parser, which reports it precisely.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(Planning::OnPlanningThread);
    };
    let mut counts = [0usize; 3];
    // Query blocks and tables joined: a small statement has one SELECT, no JOIN or comma
    // join, and parentheses nested at most two deep.
    let (mut selects, mut joins, mut commas, mut depth, mut deepest) = (0, 0, 0, 0usize, 0);
    let mut in_from = false;
    // The dotted name being read: its parts so far, whether a period was the last token, and
    // whether the last token belongs to the name with nothing between it and this one.
    // Whatever follows a period goes on with the name, and so does a part right after it
    // (`TNT.?NT`, `TNT.~Ia`, `IT.(FTNT`): the parser backtracks over such a chain as over a
    // plain one — the plan_sql fuzz target's chains of 24–27 parts broken by `?`, `~` and `(`
    // took 12 s each when each piece was counted alone.
    let (mut parts, mut after_period, mut longest_name) = (0usize, false, 0usize);
    let mut adjacent = false;
    // Open brackets and parentheses, each marked whether it counts towards the subscripts'
    // depth: a subscript does, and so does a parenthesis inside one.
    let (mut open, mut brackets, mut deepest_brackets) = (Vec::new(), 0usize, 0usize);
    for token in &tokens {
        match token {
            Token::Whitespace(_) => adjacent = false,
            // A subscript goes on with the name too (`a.b[c.d].e`): the parser backtracks over
            // chains nested in brackets as over one chain (the check_sql target's 577 bytes of
            // `b.E__C@____.bE[ZST__E.ab[…` took 15 s).
            Token::Period | Token::LBracket | Token::RBracket => {
                (after_period, adjacent) = (true, false)
            }
            _ if after_period => {
                parts += 1;
                longest_name = longest_name.max(parts);
                (after_period, adjacent) = (false, true);
            }
            Token::Word(_) | Token::Number(..) | Token::Mul | Token::Placeholder(_) => {
                parts = if adjacent { parts + 1 } else { 1 };
                longest_name = longest_name.max(parts);
                adjacent = true;
            }
            _ => (parts, adjacent) = (0, false),
        }
        if let Some(kind) = operator_kind(token) {
            counts[kind as usize] += 1;
        }
        match token {
            Token::Word(w) => match w.keyword {
                Keyword::SELECT => selects += 1,
                Keyword::JOIN | Keyword::LATERAL | Keyword::UNNEST => joins += 1,
                Keyword::FROM => in_from = true,
                Keyword::WHERE | Keyword::GROUP | Keyword::ORDER | Keyword::LIMIT => {
                    in_from = false;
                }
                _ => {}
            },
            Token::Comma if in_from && depth == 0 => commas += 1,
            Token::LParen => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        match token {
            Token::LBracket | Token::LParen => {
                let counts = matches!(token, Token::LBracket) || brackets > 0;
                open.push(counts);
                brackets += usize::from(counts);
                deepest_brackets = deepest_brackets.max(brackets);
            }
            Token::RBracket | Token::RParen => {
                brackets -= usize::from(open.pop().unwrap_or(false));
            }
            _ => {}
        }
    }
    let [logical, arithmetic, set_operations] = counts;
    let total = logical + arithmetic + set_operations;
    let refuse = |what: &str, n: usize, limit: usize| {
        Err(CoordinatorError::InvalidArgument(format!(
            "statement too deep: it chains {n} {what} and the limit is {limit}; put long lists \
             of values in an IN (…) list, or split the statement"
        )))
    };
    if deepest_brackets > MAX_SUBSCRIPT_DEPTH {
        return Err(CoordinatorError::InvalidArgument(format!(
            "subscripts nested {deepest_brackets} deep (parentheses within them count); the limit \
             is {MAX_SUBSCRIPT_DEPTH}"
        )));
    }
    if longest_name > MAX_NAME_PARTS {
        return Err(CoordinatorError::InvalidArgument(format!(
            "a dotted name of {longest_name} parts; the limit is {MAX_NAME_PARTS}"
        )));
    }
    if arithmetic > MAX_ARITHMETIC {
        return refuse("arithmetic operators", arithmetic, MAX_ARITHMETIC);
    }
    if set_operations > MAX_SET_OPERATIONS {
        return refuse(
            "set operations (UNION, EXCEPT, INTERSECT)",
            set_operations,
            MAX_SET_OPERATIONS,
        );
    }
    if total > MAX_OPERATORS {
        return refuse(
            "operators (arithmetic, comparisons, AND/OR, UNION)",
            total,
            MAX_OPERATORS,
        );
    }
    let small = sql.len() <= SMALL_BYTES
        && total <= SMALL_OPERATORS
        && selects <= 1
        && joins == 0
        && commas == 0
        && deepest <= 2;
    Ok(if small {
        Planning::Here
    } else {
        Planning::OnPlanningThread
    })
}

/// What an operator token adds to a statement's depth.
#[derive(Clone, Copy)]
enum OperatorKind {
    Logical = 0,
    Arithmetic = 1,
    SetOperation = 2,
}

fn operator_kind(token: &Token) -> Option<OperatorKind> {
    match token {
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::DuckIntDiv
        | Token::StringConcat
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight => Some(OperatorKind::Arithmetic),
        Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship => Some(OperatorKind::Logical),
        Token::Word(w) => match w.keyword {
            Keyword::AND | Keyword::OR | Keyword::XOR => Some(OperatorKind::Logical),
            Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT | Keyword::MINUS => {
                Some(OperatorKind::SetOperation)
            }
            _ => None,
        },
        _ => None,
    }
}

/// How long an idle planning thread waits for the next statement before it ends.
const PLANNING_THREAD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The threads statements are planned on: [`PLANNING_STACK`] stacks, kept for the next
/// statement while there is planning to do (a fresh 512 MiB-stack thread per statement cost a
/// point query a thread start, the stack's first page faults and an unmap twice over), as many
/// as there are statements planning at once.
fn planning_threads() -> Result<&'static tokio::runtime::Runtime> {
    static THREADS: std::sync::OnceLock<std::io::Result<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    THREADS
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("floe-plan")
                .thread_stack_size(PLANNING_STACK)
                .thread_keep_alive(PLANNING_THREAD_IDLE)
                .build()
        })
        .as_ref()
        .map_err(|e| {
            CoordinatorError::ResourcesExhausted(format!("cannot start the planning threads: {e}"))
        })
}

/// Runs the future `make` returns on a thread with a [`PLANNING_STACK`] stack (see
/// [`planning_threads`]), inside the current runtime, and returns its output; a small
/// statement's ([`Planning::Here`]) right here. Either way a panic in planning (a DataFusion
/// `unwrap` on a statement it did not expect: `SELECT a.b.c.d.e.f`, six parts naming nothing)
/// is an INTERNAL error naming it; the task serving the client goes on.
pub async fn on_planning_thread<F, Fut, T>(planning: Planning, make: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    if planning == Planning::Here {
        return std::panic::AssertUnwindSafe(make())
            .catch_unwind()
            .await
            .map_err(|panic| planning_panicked(panic.as_ref()));
    }
    let runtime = tokio::runtime::Handle::current();
    planning_threads()?
        .spawn_blocking(move || runtime.block_on(make()))
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => planning_panicked(panic.as_ref()),
            Err(e) => CoordinatorError::Internal(format!(
                "the planning thread ended without an answer: {e}"
            )),
        })
}

/// The error for a panic in planning, with its message.
fn planning_panicked(panic: &(dyn std::any::Any + Send)) -> CoordinatorError {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    CoordinatorError::Internal(format!(
        "planning the statement failed (a panic: {message})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let ok = format!("SELECT {}", vec!["1"; MAX_ARITHMETIC + 1].join(" + "));
        check_statement(&ok).expect("1,000 additions are fine");
        let deep = format!("SELECT {}", vec!["1"; MAX_ARITHMETIC + 2].join("+"));
        let err = check_statement(&deep).expect_err("too deep");
        assert!(err.to_string().contains("statement too deep"), "{err}");
        // A filter of 4,000 values as an OR chain (what BI tools write) is fine; 10,000 not.
        let ors = |n: usize| {
            format!(
                "SELECT 1 WHERE {}",
                (0..n)
                    .map(|i| format!("a = {i}"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            )
        };
        check_statement(&ors(4_000)).expect("4,000 comparisons and ORs");
        assert!(check_statement(&ors(10_000)).is_err());
        let unions = vec!["SELECT 1"; MAX_SET_OPERATIONS + 2].join(" UNION ALL ");
        assert!(check_statement(&unions).is_err());
        // Operators inside strings and comments do not count.
        let quoted = format!("SELECT '{}' -- {}", "+".repeat(50_000), "+".repeat(50_000));
        check_statement(&quoted).expect("quoted text is not an operator");
        // IN lists are flat.
        let list = format!("SELECT 1 WHERE a IN ({})", vec!["1"; 50_000].join(","));
        check_statement(&list).expect("an IN list of 50,000 values");
    }

    #[tokio::test]
    async fn a_panic_in_planning_is_an_internal_error_here_or_on_a_planning_thread() {
        for planning in [Planning::Here, Planning::OnPlanningThread] {
            let err = on_planning_thread(planning, || async {
                assert!(!std::hint::black_box(true), "an unwrap in the planner");
            })
            .await
            .expect_err("a panic is an error");
            assert!(
                matches!(&err, CoordinatorError::Internal(m) if m.contains("an unwrap in the planner")),
                "{planning:?}: {err}"
            );
            let fine = on_planning_thread(planning, || async { 7 }).await;
            assert_eq!(fine.expect("planned"), 7);
        }
    }

    #[test]
    fn long_dotted_names_are_refused_before_parsing() {
        // What the check_sql fuzz target found: 13.7 s in the parser for 125 bytes.
        let found =
            "SELECT(LUNCTE(D&TNTSELECT(LUNCTE(D&TNT.Ia.TNT.Ia.TNT.IT.FTNT.Ia.TNT.Ia.TNT.I.Ia.\
                     TNT.Ia.TNT.IT.FTNT.Ia.TNT.Ia.TNT.IT.FIIELDS. ";
        let refused = |sql: &str, message: &str| {
            let err = check_statement(sql).expect_err(message);
            assert!(err.to_string().contains(message), "{err}");
        };
        refused(found, "dotted name of");
        // The plan_sql target's: the same chain broken by placeholders, `~` and `(`, 12 s each.
        refused(
            "SELECT(LUNCTEIT.FTNT.Ia.TNT.Ia.TNT.IT.FIIELDS. (D&TNTSELI.Ia.TNT.?NT.IT.\
             FTNT.Ia.TNT.Ia.TNT.IT.FIIELDS.TI.Ia.TNT.?NT.IT.FTNT.Ia.TNT.Ia.TNT.IT.FIIELDS. ",
            "dotted name of",
        );
        refused(
            "SELECT(UNCTE(D&TNTSELECT(LU^CTD(D&TNT.~Ia.TNT.I.Ia.TNT.?a.TNT.I.~Ia.TNT.I.Ia.\
             TNT.?a.TNT.IT.(FTNT.Ia.TNT.Ia.a.TNT.I.Ia.TNST.I.Ia.TNS. ",
            "dotted name of",
        );
        // The check_sql target's: chains in subscripts nested deep (15, 14 and 12+ s).
        refused(
            include_str!("../../fuzz/corpus/check_sql/d5177ea476d371b52a9fed4113f21c47d2314127"),
            "subscripts nested",
        );
        refused(
            include_str!("../../fuzz/corpus/check_sql/fc8dfddfb259f34c4dbf623cf6b766b008b8e395"),
            "subscripts nested",
        );
        check_statement("SELECT a[b[c[d[1]]]] FROM s.t").expect("four levels");
        refused(
            "SELECT a[b[c[d[e[1]]]]] FROM s.t",
            "subscripts nested 5 deep",
        );
        refused(
            include_str!("../../fuzz/corpus/check_sql/3078e961b6a41ffa3bb1124cb04d2820bd3dafec"),
            "subscripts nested",
        );
        check_statement("SELECT f(g(h(k(m(n(t.a)))))), a[f(1)] FROM s.t")
            .expect("parentheses outside subscripts, one inside");
        // Closed subscripts chain on (two parts each): 14 parts are refused, 12 pass.
        let chain = |n: usize| format!("SELECT {}", vec!["a[1]"; n].join("."));
        refused(&chain(7), "dotted name of 14 parts");
        check_statement(&chain(6)).expect("6 subscripted parts");
        check_statement("SELECT a.b[1].c, m['k'][2] FROM s.t").expect("subscripts");
        // Placeholders and names that only stand next to each other are not one name.
        check_statement("SELECT a.b FROM s.t WHERE a.c = ? AND a.d = $1 LIMIT ?")
            .expect("placeholders apart from names");
        let name = |n: usize| {
            format!(
                "SELECT {} FROM t",
                (0..n)
                    .map(|i| format!("p{i}"))
                    .collect::<Vec<_>>()
                    .join(".")
            )
        };
        check_statement(&name(MAX_NAME_PARTS)).expect("a name of 12 parts");
        assert!(check_statement(&name(MAX_NAME_PARTS + 1)).is_err());
        // Spaces around the periods do not split a name; periods in strings, numbers and
        // between names of a list are no parts.
        assert!(check_statement(&name(MAX_NAME_PARTS + 1).replace('.', " . ")).is_err());
        let many = format!("SELECT {} FROM t", vec!["a.b.c"; 100].join(", "));
        check_statement(&many).expect("many short names");
        check_statement(&format!("SELECT '{}', 1.5, t.*", "x.".repeat(100))).expect("a string");
        // Within the limit, the parser's time stays small.
        let started = std::time::Instant::now();
        let chain = format!("SELECT f(g(a&{}))", ["x"; MAX_NAME_PARTS].join("."));
        let _ = datafusion::sql::parser::DFParser::parse_sql(&chain);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn only_small_single_table_statements_are_planned_here() {
        for sql in [
            "SELECT 1",
            "SELECT o_orderkey, o_totalprice FROM tpch.orders WHERE o_orderkey = $1",
            "select city, count(distinct uid) from ods.events where dt between '2026-01-01' and \
             '2026-01-31' group by city, device order by 2 desc limit 10",
        ] {
            assert_eq!(
                check_statement(sql).expect("allowed"),
                Planning::Here,
                "{sql}"
            );
        }
        let ors = format!(
            "SELECT * FROM t WHERE {}",
            (0..SMALL_OPERATORS)
                .map(|i| format!("a = {i}"))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        for sql in [
            "SELECT * FROM a JOIN b ON a.k = b.k",
            "SELECT * FROM a, b WHERE a.k = b.k",
            "SELECT * FROM t WHERE k IN (SELECT k FROM u)",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "SELECT 1 UNION ALL SELECT 2",
            "SELECT ((1 + 2) * (3 + (4)))",
            ors.as_str(),
            &format!("SELECT '{}'", "x".repeat(SMALL_BYTES)),
            "SELECT 'unterminated",
        ] {
            assert_eq!(
                check_statement(sql).expect("allowed"),
                Planning::OnPlanningThread,
                "{sql}"
            );
        }
    }

    #[test]
    fn huge_statements_are_refused() {
        let huge = format!("SELECT '{}'", "x".repeat(MAX_STATEMENT_BYTES));
        let err = check_statement(&huge).expect_err("too large");
        assert!(err.to_string().contains("statement too large"), "{err}");
    }
}
