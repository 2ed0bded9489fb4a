//! What kind of statement a parsed statement is: what decides how the coordinator plans it
//! (DataFusion, Floe's DDL, a setting) and what its errors call it.

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement as SqlStatement};

/// `EXPLAIN ANALYZE …`, in either parser's form.
pub(crate) fn is_explain_analyze(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Explain(explain) => explain.analyze,
        DfStatement::Statement(s) => {
            matches!(s.as_ref(), SqlStatement::Explain { analyze: true, .. })
        }
        _ => false,
    }
}

pub(crate) fn is_insert(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Insert(_) => true,
            SqlStatement::Explain { statement, .. } => {
                is_insert(&DfStatement::Statement(statement.clone()))
            }
            _ => false,
        },
        DfStatement::Explain(explain) => is_insert(&explain.statement),
        _ => false,
    }
}

/// A query or an INSERT (perhaps under EXPLAIN), whose tables are all among its references.
pub(crate) fn is_query_or_insert(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) | SqlStatement::Insert(_) => true,
            SqlStatement::Explain { statement, .. } => {
                is_query_or_insert(&DfStatement::Statement(statement.clone()))
            }
            _ => false,
        },
        DfStatement::Explain(explain) => is_query_or_insert(&explain.statement),
        _ => false,
    }
}

/// Statements Floe runs against its catalog itself.
pub(crate) fn is_ddl(statement: &DfStatement) -> bool {
    let DfStatement::Statement(s) = statement else {
        return false;
    };
    match s.as_ref() {
        SqlStatement::CreateSchema { .. }
        | SqlStatement::CreateTable(_)
        | SqlStatement::AlterTable(_)
        | SqlStatement::Call(_) => true,
        SqlStatement::Drop { object_type, .. } => matches!(
            object_type,
            ObjectType::Schema | ObjectType::Database | ObjectType::Table
        ),
        _ => false,
    }
}

/// Queries, INSERT, EXPLAIN of them, SHOW and DESCRIBE: the statements DataFusion plans.
pub(crate) fn is_query(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_)
            | SqlStatement::Insert(_)
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. }
            | SqlStatement::ExplainTable { .. } => true,
            SqlStatement::Explain { statement, .. } => {
                is_query(&DfStatement::Statement(statement.clone()))
            }
            _ => false,
        },
        DfStatement::Explain(explain) => is_query(&explain.statement),
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => {
            false
        }
    }
}

/// The statement's leading keywords, for error messages.
pub(crate) fn statement_kind(statement: &DfStatement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
