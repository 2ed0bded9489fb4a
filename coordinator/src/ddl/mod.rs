//! DDL against the Iceberg catalog: schemas (namespaces), tables, schema evolution, table
//! properties, and `CREATE TABLE … AS SELECT`.
//!
//! Partition specs use Spark's syntax with Iceberg's hidden transforms:
//!
//! ```sql
//! CREATE TABLE dwd.events (ts TIMESTAMP, user_id BIGINT, city VARCHAR)
//! PARTITIONED BY (day(ts), bucket(16, user_id), truncate(4, city), city)
//! WITH ('write.target-file-size-bytes' = '134217728')
//! ```
//!
//! Transforms: a bare column (identity), `year|month|day|hour(col)` (also the plural forms),
//! `bucket(N, col)` and `truncate(W, col)` (either argument order). The clause is taken out of
//! the statement before DataFusion parses the rest, so it may sit anywhere after the column
//! list (Spark puts it before `AS SELECT`).

use std::collections::HashMap;

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    AlterTableOperation, CreateTable, CreateTableOptions, Expr as SqlExpr, ObjectName, ObjectType,
    SchemaName, SqlOption, Statement as SqlStatement, Value,
};
use iceberg::spec::Transform;
use iceberg::{NamespaceIdent, TableIdent};

use crate::error::{CoordinatorError, Result};

mod partitioning;
mod procedures;
mod run;

pub use partitioning::{partition_field, take_partitioned_by};
pub use run::{create_iceberg_table, run};

/// A DDL statement, parsed and checked but not yet run.
#[derive(Debug, Clone)]
pub enum Command {
    /// CREATE SCHEMA.
    CreateSchema {
        namespace: NamespaceIdent,
        if_not_exists: bool,
        properties: HashMap<String, String>,
    },
    /// DROP SCHEMA.
    DropSchema {
        namespace: NamespaceIdent,
        if_exists: bool,
        cascade: bool,
    },
    /// CREATE TABLE, with columns or `AS SELECT`.
    CreateTable(Box<CreateTableCommand>),
    /// DROP TABLE.
    DropTable {
        tables: Vec<TableIdent>,
        if_exists: bool,
    },
    /// ALTER TABLE.
    AlterTable {
        table: TableIdent,
        if_exists: bool,
        changes: Vec<Change>,
    },
    /// CALL system.register_table: a table written elsewhere, from its metadata file.
    RegisterTable {
        table: TableIdent,
        metadata_location: String,
    },
}

/// CREATE TABLE's parts.
#[derive(Debug, Clone)]
pub struct CreateTableCommand {
    /// The new table.
    pub table: TableIdent,
    /// Do nothing if it exists.
    pub if_not_exists: bool,
    /// Its columns (from the column list, or from the query of a CTAS).
    pub schema: ArrowSchema,
    /// Its partition fields: (source column, transform).
    pub partitioning: Vec<(String, Transform)>,
    /// Table properties.
    pub properties: HashMap<String, String>,
    /// The SELECT of a CTAS, as SQL.
    pub query: Option<String>,
}

/// One change of an ALTER TABLE.
#[derive(Debug, Clone)]
pub enum Change {
    /// ADD COLUMN.
    AddColumn {
        name: String,
        data_type: DataType,
        if_not_exists: bool,
    },
    /// DROP COLUMN.
    DropColumn { names: Vec<String>, if_exists: bool },
    /// SET TBLPROPERTIES.
    SetProperties(HashMap<String, String>),
    /// RENAME COLUMN: the field keeps its id, so existing files read right.
    RenameColumn { from: String, to: String },
}

fn normalized(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

pub(super) fn invalid(message: impl Into<String>) -> CoordinatorError {
    CoordinatorError::InvalidArgument(message.into())
}

/// Table properties a client may not set: they would point writes outside the warehouse.
const LOCATION_PROPERTIES: [&str; 3] = [
    "write.data.path",
    "write.folder-storage.path",
    "write.metadata.path",
];

/// The parts of a name, normalized as DataFusion does (unquoted parts lowercase), without a
/// leading `floe.` catalog part. Every part is checked with [`check_name_part`]: schema and
/// table names become folders of the warehouse.
fn name_parts(name: &ObjectName) -> Result<Vec<String>> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| match i.quote_style {
                    Some(_) => i.value.clone(),
                    None => i.value.to_lowercase(),
                })
                .ok_or_else(|| invalid(format!("'{name}' is not a name")))
                .and_then(|part| check_name_part(&part).map(|()| part))
        })
        .collect::<Result<_>>()?;
    Ok(parts)
}

/// Longest schema or table name, in bytes.
const MAX_NAME_LEN: usize = 255;

/// A schema or table name must be a name, not a path: it becomes a folder under the
/// warehouse, and a location URL. No path separators, no `.` or `..`, no control characters,
/// none of the characters a URL gives a meaning (`%`, `?`, `#`), at most 255 bytes.
pub fn check_name_part(part: &str) -> Result<()> {
    let shown: String = part.chars().take(64).flat_map(char::escape_debug).collect();
    let bad = |why: &str| Err(invalid(format!("invalid name \"{shown}\": {why}")));
    if part.is_empty() {
        return bad("a name cannot be empty");
    }
    if part.len() > MAX_NAME_LEN {
        return bad("a name is at most 255 bytes");
    }
    if part == "." || part == ".." {
        return bad("'.' and '..' are not names");
    }
    if let Some(c) = part
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\' | '%' | '?' | '#'))
    {
        return bad(&format!(
            "it contains {:?}, which cannot be part of a schema or table name",
            c
        ));
    }
    Ok(())
}

/// `ns.table` (or `table` in the session's schema, `default_schema`) as an Iceberg identifier.
pub fn table_ident(name: &ObjectName, default_schema: &str) -> Result<TableIdent> {
    let parts = name_parts(name)?;
    let parts: Vec<String> = match parts.as_slice() {
        [catalog, rest @ ..] if rest.len() == 2 && catalog == floe_catalog::CATALOG_NAME => {
            rest.to_vec()
        }
        _ => parts,
    };
    match parts.as_slice() {
        [table] => Ok(TableIdent::new(
            NamespaceIdent::new(default_schema.to_string()),
            table.clone(),
        )),
        [ns, table] => Ok(TableIdent::new(
            NamespaceIdent::new(ns.clone()),
            table.clone(),
        )),
        _ => Err(invalid(format!(
            "'{name}' is not a table name: write schema.table"
        ))),
    }
}

fn namespace_ident(name: &ObjectName) -> Result<NamespaceIdent> {
    let parts = name_parts(name)?;
    match parts.as_slice() {
        [ns] => Ok(NamespaceIdent::new(ns.clone())),
        [catalog, ns] if catalog == floe_catalog::CATALOG_NAME => {
            Ok(NamespaceIdent::new(ns.clone()))
        }
        _ => Err(invalid(format!("'{name}' is not a schema name"))),
    }
}

/// `k = v` options as properties (keys and values as written, quotes removed).
fn properties(options: &[SqlOption]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(invalid(format!(
                "table property '{option}' is not key = value"
            )));
        };
        let value = match value {
            SqlExpr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                Value::Number(n, _) => n.clone(),
                Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            SqlExpr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        };
        let key = key.value.clone();
        if LOCATION_PROPERTIES.contains(&key.as_str()) {
            return Err(CoordinatorError::PermissionDenied(format!(
                "table property '{key}' is not allowed: tables live in the catalog's warehouse"
            )));
        }
        out.insert(key, value);
    }
    Ok(out)
}

fn table_properties(options: &CreateTableOptions) -> Result<HashMap<String, String>> {
    match options {
        CreateTableOptions::None => Ok(HashMap::new()),
        CreateTableOptions::With(o)
        | CreateTableOptions::Options(o)
        | CreateTableOptions::TableProperties(o) => properties(o),
        CreateTableOptions::Plain(_) => Err(invalid(
            "table options must be WITH (k = v) or TBLPROPERTIES (k = v)",
        )),
    }
}

/// A column type Iceberg can store, for one DataFusion gives (CTAS columns are cast to it).
pub(super) fn storable(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 | DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Dictionary(_, value) => storable(value),
        other => other.clone(),
    }
}

/// The schema unqualified names resolve in, in this session.
fn default_schema(ctx: &SessionContext) -> String {
    ctx.state()
        .config()
        .options()
        .catalog
        .default_schema
        .clone()
}

/// Builds a command from a DDL statement. `ctx` resolves column types and CTAS queries.
pub async fn parse(
    ctx: &SessionContext,
    statement: DfStatement,
    partition_items: Vec<String>,
) -> Result<Command> {
    let DfStatement::Statement(sql) = &statement else {
        return Err(invalid("not a DDL statement"));
    };
    if !partition_items.is_empty() && !matches!(sql.as_ref(), SqlStatement::CreateTable(_)) {
        return Err(invalid("PARTITIONED BY belongs to CREATE TABLE"));
    }
    match sql.as_ref() {
        SqlStatement::Call(function) => procedures::parse_call(function),
        SqlStatement::CreateSchema {
            schema_name,
            if_not_exists,
            with,
            options,
            ..
        } => {
            let SchemaName::Simple(name) = schema_name else {
                return Err(invalid("CREATE SCHEMA … AUTHORIZATION is not supported"));
            };
            let mut props = HashMap::new();
            if let Some(with) = with {
                props.extend(properties(with)?);
            }
            if let Some(options) = options {
                props.extend(properties(options)?);
            }
            Ok(Command::CreateSchema {
                namespace: namespace_ident(name)?,
                if_not_exists: *if_not_exists,
                properties: props,
            })
        }
        SqlStatement::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            ..
        } => match object_type {
            ObjectType::Schema | ObjectType::Database => {
                let [name] = names.as_slice() else {
                    return Err(invalid("DROP SCHEMA takes one schema"));
                };
                Ok(Command::DropSchema {
                    namespace: namespace_ident(name)?,
                    if_exists: *if_exists,
                    cascade: *cascade,
                })
            }
            ObjectType::Table => Ok(Command::DropTable {
                tables: names
                    .iter()
                    .map(|n| table_ident(n, &default_schema(ctx)))
                    .collect::<Result<_>>()?,
                if_exists: *if_exists,
            }),
            other => Err(invalid(format!("DROP {other} is not supported"))),
        },
        SqlStatement::CreateTable(create) => {
            create_table(ctx, &statement, create, partition_items).await
        }
        SqlStatement::AlterTable(alter) => {
            let mut changes = Vec::new();
            for operation in &alter.operations {
                changes.push(match operation {
                    AlterTableOperation::AddColumn {
                        column_def,
                        if_not_exists,
                        ..
                    } => {
                        let probe = format!("CREATE TABLE floe_column_probe ({column_def})");
                        let schema = columns_of(ctx, &probe).await?;
                        let field = schema.field(0);
                        Change::AddColumn {
                            name: field.name().clone(),
                            data_type: field.data_type().clone(),
                            if_not_exists: *if_not_exists,
                        }
                    }
                    AlterTableOperation::DropColumn {
                        column_names,
                        if_exists,
                        ..
                    } => Change::DropColumn {
                        names: column_names.iter().map(|c| c.value.clone()).collect(),
                        if_exists: *if_exists,
                    },
                    AlterTableOperation::SetTblProperties { table_properties } => {
                        Change::SetProperties(properties(table_properties)?)
                    }
                    AlterTableOperation::RenameColumn {
                        old_column_name,
                        new_column_name,
                    } => Change::RenameColumn {
                        from: normalized(old_column_name),
                        to: normalized(new_column_name),
                    },
                    other => {
                        return Err(CoordinatorError::Unimplemented(format!(
                            "ALTER TABLE {other} is not supported"
                        )))
                    }
                });
            }
            Ok(Command::AlterTable {
                table: table_ident(&alter.name, &default_schema(ctx))?,
                if_exists: alter.if_exists,
                changes,
            })
        }
        other => Err(invalid(format!("not a DDL statement: {other}"))),
    }
}

/// The columns DataFusion gives a CREATE TABLE (its column list or its query).
async fn columns_of(ctx: &SessionContext, sql: &str) -> Result<ArrowSchema> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    create_schema_of(ctx, statement).await
}

async fn create_schema_of(ctx: &SessionContext, statement: DfStatement) -> Result<ArrowSchema> {
    match ctx.state().statement_to_plan(statement).await? {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
            Ok(create.input.schema().as_arrow().clone())
        }
        other => Err(CoordinatorError::Internal(format!(
            "CREATE TABLE planned as {}",
            other.display()
        ))),
    }
}

async fn create_table(
    ctx: &SessionContext,
    statement: &DfStatement,
    create: &CreateTable,
    partition_items: Vec<String>,
) -> Result<Command> {
    let hive_location = create
        .hive_formats
        .as_ref()
        .is_some_and(|h| h.location.is_some());
    if create.location.is_some() || hive_location {
        return Err(CoordinatorError::PermissionDenied(
            "CREATE TABLE … LOCATION is not allowed: tables live in the catalog's warehouse".into(),
        ));
    }
    if create.external || create.temporary || create.or_replace || create.like.is_some() {
        return Err(CoordinatorError::Unimplemented(
            "only CREATE TABLE [IF NOT EXISTS] name (columns) | AS SELECT is supported".into(),
        ));
    }
    let table = table_ident(&create.name, &default_schema(ctx))?;
    // DataFusion plans the columns (or the query); Floe handles the options itself.
    let mut probe = create.clone();
    probe.table_options = CreateTableOptions::None;
    probe.if_not_exists = false;
    let _ = statement;
    let planned = create_schema_of(
        ctx,
        DfStatement::Statement(Box::new(SqlStatement::CreateTable(probe))),
    )
    .await?;
    let is_ctas = create.query.is_some();
    // CTAS columns are nullable (as in Trino and Spark) and of a type Iceberg stores.
    let fields: Vec<Field> = planned
        .fields()
        .iter()
        .map(|f| {
            let field = Field::new(
                f.name(),
                storable(f.data_type()),
                f.is_nullable() || is_ctas,
            );
            field
        })
        .collect();
    let partitioning = partition_items
        .iter()
        .map(|item| partition_field(item))
        .collect::<Result<Vec<_>>>()?;
    for (column, _) in &partitioning {
        if !fields.iter().any(|f| f.name() == column) {
            return Err(invalid(format!(
                "PARTITIONED BY names column '{column}', which the table does not have"
            )));
        }
    }
    Ok(Command::CreateTable(Box::new(CreateTableCommand {
        table,
        if_not_exists: create.if_not_exists,
        schema: ArrowSchema::new(fields),
        partitioning,
        properties: table_properties(&create.table_options)?,
        query: create.query.as_ref().map(|q| q.to_string()),
    })))
}
