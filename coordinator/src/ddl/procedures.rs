//! `CALL system.<procedure>(…)`: table-management procedures.
//!
//! `CALL system.register_table('schema', 'table', 's3://…/metadata/v9.metadata.json')` brings a
//! table written elsewhere (Spark, Trino, pyiceberg) into Floe's catalog from its metadata file.
//! Arguments may also be named, as Spark and Trino name them: `schema_name => 's', table_name =>
//! 't', metadata_file => '…'`, or Spark's `table => 's.t', metadata_file => '…'`. The catalog
//! prefix (`floe.system.…`) is optional.

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};
use iceberg::{NamespaceIdent, TableIdent};

use super::{invalid, Command};
use crate::error::Result;

/// The command a `CALL` statement asks for.
pub fn parse_call(function: &Function) -> Result<Command> {
    let parts: Vec<String> = function
        .name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
        .collect();
    let procedure = match parts.as_slice() {
        [system, name] if system == "system" => name.as_str(),
        [catalog, system, name] if catalog == floe_catalog::CATALOG_NAME && system == "system" => {
            name.as_str()
        }
        _ => {
            return Err(invalid(format!(
                "unknown procedure {}: Floe has system.register_table",
                function.name
            )))
        }
    };
    match procedure {
        "register_table" => register_table(function),
        other => Err(invalid(format!(
            "unknown procedure system.{other}: Floe has system.register_table"
        ))),
    }
}

fn register_table(function: &Function) -> Result<Command> {
    let usage = "CALL system.register_table('schema', 'table', 'metadata file location')";
    let FunctionArguments::List(list) = &function.args else {
        return Err(invalid(format!("usage: {usage}")));
    };
    let mut positional = vec![];
    let mut named = std::collections::HashMap::new();
    for arg in &list.args {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => positional.push(text(e, usage)?),
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            } => {
                named.insert(name.value.to_ascii_lowercase(), text(e, usage)?);
            }
            _ => return Err(invalid(format!("usage: {usage}"))),
        }
    }
    let (schema, table, metadata) = match (positional.as_slice(), named.is_empty()) {
        ([schema, table, metadata], true) => (schema.clone(), table.clone(), metadata.clone()),
        ([], false) => {
            let metadata = named
                .get("metadata_file")
                .or_else(|| named.get("metadata_location"))
                .cloned()
                .ok_or_else(|| invalid(format!("metadata_file is missing; usage: {usage}")))?;
            match (
                named.get("schema_name"),
                named.get("table_name"),
                named.get("table"),
            ) {
                (Some(s), Some(t), None) => (s.clone(), t.clone(), metadata),
                (None, None, Some(qualified)) => match qualified.split_once('.') {
                    Some((s, t)) => (s.to_string(), t.to_string(), metadata),
                    None => {
                        return Err(invalid(format!(
                            "table => '{qualified}': write schema.table"
                        )))
                    }
                },
                _ => {
                    return Err(invalid(format!(
                        "name the table with schema_name and table_name, or table => \
                         'schema.table'; usage: {usage}"
                    )))
                }
            }
        }
        _ => return Err(invalid(format!("usage: {usage}"))),
    };
    super::check_name_part(&schema)?;
    super::check_name_part(&table)?;
    if !metadata.ends_with(".metadata.json") {
        return Err(invalid(format!(
            "'{metadata}' is not an Iceberg metadata file (…/metadata/….metadata.json)"
        )));
    }
    Ok(Command::RegisterTable {
        table: TableIdent::new(NamespaceIdent::new(schema), table),
        metadata_location: metadata,
    })
}

fn text(expr: &Expr, usage: &str) -> Result<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(s.clone()),
            _ => Err(invalid(format!(
                "{expr}: give text in single quotes; usage: {usage}"
            ))),
        },
        _ => Err(invalid(format!(
            "{expr}: give text in single quotes; usage: {usage}"
        ))),
    }
}
