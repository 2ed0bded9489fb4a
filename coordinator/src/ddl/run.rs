//! Running DDL commands against the Iceberg catalog.

use std::sync::Arc;

use iceberg::spec::{Transform, UnboundPartitionSpec};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};

use super::{invalid, storable, Change, Command, CreateTableCommand};
use crate::error::{CoordinatorError, Result};
use floe_catalog::commit::Committer;

fn iceberg_error(what: String, e: iceberg::Error) -> CoordinatorError {
    let message = format!("{what}: {}", floe_engine::error::error_chain(&e));
    match e.kind() {
        iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound => {
            CoordinatorError::NotFound(message)
        }
        iceberg::ErrorKind::TableAlreadyExists | iceberg::ErrorKind::NamespaceAlreadyExists => {
            CoordinatorError::AlreadyExists(message)
        }
        iceberg::ErrorKind::FeatureUnsupported => CoordinatorError::Unimplemented(message),
        // DDL input the catalog rejects is the statement's fault, not lost data.
        iceberg::ErrorKind::DataInvalid | iceberg::ErrorKind::PreconditionFailed => {
            CoordinatorError::InvalidArgument(message)
        }
        _ => CoordinatorError::Unavailable(message),
    }
}

/// `ns.table`, for messages.
fn display(ident: &TableIdent) -> String {
    format!("{}.{}", ident.namespace().to_url_string(), ident.name())
}

async fn table_exists(catalog: &Arc<dyn Catalog>, ident: &TableIdent) -> Result<bool> {
    catalog
        .table_exists(ident)
        .await
        .map_err(|e| iceberg_error(format!("looking up table {}", display(ident)), e))
}

async fn schema_exists(catalog: &Arc<dyn Catalog>, namespace: &NamespaceIdent) -> Result<bool> {
    catalog.namespace_exists(namespace).await.map_err(|e| {
        iceberg_error(
            format!("looking up schema {}", namespace.to_url_string()),
            e,
        )
    })
}

/// Creates the Iceberg table of a CREATE TABLE (without running a CTAS query). Returns false
/// when it existed and IF NOT EXISTS said to leave it.
pub async fn create_iceberg_table(
    catalog: &Arc<dyn Catalog>,
    command: &CreateTableCommand,
) -> Result<bool> {
    let name = display(&command.table);
    if table_exists(catalog, &command.table).await? {
        return if command.if_not_exists {
            Ok(false)
        } else {
            Err(CoordinatorError::AlreadyExists(format!(
                "table '{name}' already exists"
            )))
        };
    }
    let schema = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&command.schema)
        .map_err(|e| invalid(format!("columns of {name}: {e}")))?;
    let mut spec = UnboundPartitionSpec::builder();
    for (column, transform) in &command.partitioning {
        let field = schema
            .field_by_name(column)
            .ok_or_else(|| invalid(format!("PARTITIONED BY: no column '{column}'")))?;
        let target = match transform {
            Transform::Identity => column.clone(),
            Transform::Bucket(_) => format!("{column}_bucket"),
            Transform::Truncate(_) => format!("{column}_trunc"),
            Transform::Year => format!("{column}_year"),
            Transform::Month => format!("{column}_month"),
            Transform::Day => format!("{column}_day"),
            Transform::Hour => format!("{column}_hour"),
            other => format!("{column}_{other}"),
        };
        spec = spec
            .add_partition_field(field.id, target, *transform)
            .map_err(|e| invalid(format!("PARTITIONED BY {column}: {e}")))?;
    }
    let creation = TableCreation::builder()
        .name(command.table.name().to_string())
        .schema(schema)
        .partition_spec(spec.build())
        .properties(command.properties.clone())
        .build();
    catalog
        .create_table(command.table.namespace(), creation)
        .await
        .map_err(|e| match e.kind() {
            iceberg::ErrorKind::NamespaceNotFound => CoordinatorError::NotFound(format!(
                "creating table {name}: schema '{}' not found (CREATE SCHEMA makes it)",
                command.table.namespace().to_url_string()
            )),
            _ => iceberg_error(format!("creating table {name}"), e),
        })?;
    Ok(true)
}

/// Runs every DDL command but CTAS's query (the caller runs that as an INSERT).
pub async fn run(
    catalog: &Arc<dyn Catalog>,
    swap: Option<&dyn Committer>,
    command: &Command,
) -> Result<()> {
    match command {
        Command::CreateSchema {
            namespace,
            if_not_exists,
            properties,
        } => {
            let name = namespace.to_url_string();
            if schema_exists(catalog, namespace).await? {
                return if *if_not_exists {
                    Ok(())
                } else {
                    Err(CoordinatorError::AlreadyExists(format!(
                        "schema '{name}' already exists"
                    )))
                };
            }
            catalog
                .create_namespace(namespace, properties.clone())
                .await
                .map_err(|e| iceberg_error(format!("creating schema {name}"), e))?;
            Ok(())
        }
        Command::DropSchema {
            namespace,
            if_exists,
            cascade,
        } => {
            let name = namespace.to_url_string();
            if !schema_exists(catalog, namespace).await? {
                return if *if_exists {
                    Ok(())
                } else {
                    Err(CoordinatorError::NotFound(format!(
                        "schema '{name}' not found"
                    )))
                };
            }
            let tables = catalog
                .list_tables(namespace)
                .await
                .map_err(|e| iceberg_error(format!("listing schema {name}"), e))?;
            if !tables.is_empty() && !cascade {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "schema '{name}' holds {} table(s); DROP SCHEMA {name} CASCADE drops them too",
                    tables.len()
                )));
            }
            for table in &tables {
                catalog
                    .drop_table(table)
                    .await
                    .map_err(|e| iceberg_error(format!("dropping table {table}"), e))?;
            }
            catalog
                .drop_namespace(namespace)
                .await
                .map_err(|e| iceberg_error(format!("dropping schema {name}"), e))?;
            Ok(())
        }
        Command::CreateTable(create) => create_iceberg_table(catalog, create).await.map(|_| ()),
        Command::DropTable { tables, if_exists } => {
            for table in tables {
                if !table_exists(catalog, table).await? {
                    if *if_exists {
                        continue;
                    }
                    return Err(CoordinatorError::NotFound(format!(
                        "table '{}' not found",
                        display(table)
                    )));
                }
                catalog
                    .drop_table(table)
                    .await
                    .map_err(|e| iceberg_error(format!("dropping table {table}"), e))?;
            }
            Ok(())
        }
        Command::AlterTable {
            table,
            if_exists,
            changes,
        } => alter_table(catalog, swap, table, *if_exists, changes).await,
        Command::RegisterTable {
            table,
            metadata_location,
        } => {
            if !schema_exists(catalog, &table.namespace).await? {
                return Err(CoordinatorError::NotFound(format!(
                    "schema '{}' not found",
                    table.namespace.to_url_string()
                )));
            }
            if table_exists(catalog, table).await? {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "table '{table}' already exists"
                )));
            }
            catalog
                .register_table(table, metadata_location.clone())
                .await
                .map_err(|e| {
                    iceberg_error(format!("registering {table} from {metadata_location}"), e)
                })?;
            Ok(())
        }
    }
}

async fn alter_table(
    catalog: &Arc<dyn Catalog>,
    swap: Option<&dyn Committer>,
    ident: &TableIdent,
    if_exists: bool,
    changes: &[Change],
) -> Result<()> {
    let name = display(ident);
    if !table_exists(catalog, ident).await? {
        return if if_exists {
            Ok(())
        } else {
            Err(CoordinatorError::NotFound(format!(
                "table '{name}' not found"
            )))
        };
    }
    for change in changes {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| iceberg_error(format!("loading table {name}"), e))?;
        let schema = table.metadata().current_schema();
        let tx = Transaction::new(&table);
        let tx = match change {
            Change::AddColumn {
                name: column,
                data_type,
                if_not_exists,
            } => {
                if schema.field_by_name(column).is_some() {
                    if *if_not_exists {
                        continue;
                    }
                    return Err(CoordinatorError::AlreadyExists(format!(
                        "table {name} already has a column '{column}'"
                    )));
                }
                let field_type = iceberg::arrow::arrow_type_to_type(&storable(data_type))
                    .map_err(|e| invalid(format!("column {column}: {e}")))?;
                tx.update_schema()
                    .add_column(AddColumn::optional(column, field_type))
                    .apply(tx)
            }
            Change::DropColumn { names, if_exists } => {
                let mut action = tx.update_schema();
                let mut any = false;
                for column in names {
                    if schema.field_by_name(column).is_none() {
                        if *if_exists {
                            continue;
                        }
                        return Err(CoordinatorError::NotFound(format!(
                            "table {name} has no column '{column}'"
                        )));
                    }
                    action = action.delete_column(column);
                    any = true;
                }
                if !any {
                    continue;
                }
                action.apply(tx)
            }
            Change::RenameColumn { from, to } => {
                let Some(swap) = swap else {
                    return Err(CoordinatorError::Unimplemented(format!(
                        "ALTER TABLE {name} RENAME COLUMN: this REST catalog needs credentials, \
                         which Floe's schema commit does not send yet"
                    )));
                };
                floe_catalog::commit::rename_column(catalog.as_ref(), swap, ident, &name, from, to)
                    .await?;
                continue;
            }
            Change::SetProperties(props) => {
                let mut action = tx.update_table_properties();
                for (k, v) in props {
                    action = action.set(k.clone(), v.clone());
                }
                action.apply(tx)
            }
        }
        .map_err(|e| iceberg_error(format!("altering table {name}"), e))?;
        tx.commit(catalog.as_ref())
            .await
            .map_err(|e| iceberg_error(format!("altering table {name}"), e))?;
    }
    Ok(())
}
