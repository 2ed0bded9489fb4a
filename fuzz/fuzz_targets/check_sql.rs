//! Whatever SQL text a client sends: the coordinator's checks before planning — the size and
//! depth limits, the PARTITIONED BY scanner, parsing, and the checks on schema and table names
//! — answer or refuse it, never panic, and never pass a name that is a path.
#![no_main]

use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{SchemaName, Statement as SqlStatement};
use floe_coordinator::ddl::{check_name_part, take_partitioned_by};
use floe_coordinator::limits::check_statement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if check_statement(sql).is_err() {
        return;
    }
    let Ok((rest, _items)) = take_partitioned_by(sql) else {
        return;
    };
    let Ok(mut parser) = DFParserBuilder::new(rest.as_str())
        .with_recursion_limit(50)
        .build()
    else {
        return;
    };
    let Ok(statements) = parser.parse_statements() else {
        return;
    };
    for statement in statements {
        let Statement::Statement(statement) = statement else {
            continue;
        };
        let names = match statement.as_ref() {
            SqlStatement::CreateTable(create) => create.name.0.clone(),
            SqlStatement::CreateSchema {
                schema_name: SchemaName::Simple(name),
                ..
            } => name.0.clone(),
            _ => continue,
        };
        for part in names {
            let Some(ident) = part.as_ident() else {
                continue;
            };
            if check_name_part(&ident.value).is_ok() {
                let v = &ident.value;
                assert!(
                    !v.contains('/')
                        && !v.contains('\\')
                        && v != ".."
                        && v != "."
                        && !v.contains('%'),
                    "a path passed as a name: {v:?}"
                );
            }
        }
    }
});
