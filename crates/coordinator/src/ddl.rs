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
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    AlterTableOperation, CreateTable, CreateTableOptions, Expr as SqlExpr, FunctionArg,
    FunctionArgExpr, FunctionArguments, ObjectName, ObjectType, SchemaName, SqlOption,
    Statement as SqlStatement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use iceberg::spec::{Transform, UnboundPartitionSpec};
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};

use crate::error::{CoordinatorError, Result};
use floe_catalog::overwrite::SqlMetadataSwap;

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

fn invalid(message: impl Into<String>) -> CoordinatorError {
    CoordinatorError::InvalidArgument(message.into())
}

/// Table properties a client may not set: they would point writes outside the warehouse.
const LOCATION_PROPERTIES: [&str; 3] = [
    "write.data.path",
    "write.folder-storage.path",
    "write.metadata.path",
];

/// Takes `PARTITIONED BY ( … )` out of a statement: the statement without it, and the clause's
/// items as SQL text (none when absent).
pub fn take_partitioned_by(sql: &str) -> Result<(String, Vec<String>)> {
    let bytes = sql.as_bytes();
    let lower = sql.to_ascii_lowercase();
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
        if at_word && lower[i..].starts_with("partitioned") {
            let mut j = i + "partitioned".len();
            let skip_ws = |j: &mut usize| {
                while *j < bytes.len() && bytes[*j].is_ascii_whitespace() {
                    *j += 1;
                }
            };
            skip_ws(&mut j);
            if lower[j..].starts_with("by") {
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

/// The parts of a name, normalized as DataFusion does (unquoted parts lowercase), without a
/// leading `floe.` catalog part.
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
        })
        .collect::<Result<_>>()?;
    Ok(parts)
}

/// `ns.table` (or `table` in the default schema) as an Iceberg identifier.
pub fn table_ident(name: &ObjectName) -> Result<TableIdent> {
    let parts = name_parts(name)?;
    let parts: Vec<String> = match parts.as_slice() {
        [catalog, rest @ ..] if rest.len() == 2 && catalog == floe_catalog::CATALOG_NAME => {
            rest.to_vec()
        }
        _ => parts,
    };
    match parts.as_slice() {
        [table] => Ok(TableIdent::new(
            NamespaceIdent::new("default".into()),
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
fn storable(data_type: &DataType) -> DataType {
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
                tables: names.iter().map(table_ident).collect::<Result<_>>()?,
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
                table: table_ident(&alter.name)?,
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
    let table = table_ident(&create.name)?;
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

fn iceberg_error(what: String, e: iceberg::Error) -> CoordinatorError {
    match e.kind() {
        iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound => {
            CoordinatorError::NotFound(format!("{what}: {}", floe_catalog::exec::error_chain(&e)))
        }
        iceberg::ErrorKind::TableAlreadyExists | iceberg::ErrorKind::NamespaceAlreadyExists => {
            CoordinatorError::AlreadyExists(format!(
                "{what}: {}",
                floe_catalog::exec::error_chain(&e)
            ))
        }
        iceberg::ErrorKind::FeatureUnsupported => CoordinatorError::Unimplemented(format!(
            "{what}: {}",
            floe_catalog::exec::error_chain(&e)
        )),
        iceberg::ErrorKind::DataInvalid | iceberg::ErrorKind::PreconditionFailed => {
            CoordinatorError::InvalidArgument(format!(
                "{what}: {}",
                floe_catalog::exec::error_chain(&e)
            ))
        }
        _ => CoordinatorError::Unavailable(format!(
            "{what}: {}",
            floe_catalog::exec::error_chain(&e)
        )),
    }
}

/// Creates the Iceberg table of a CREATE TABLE (without running a CTAS query). Returns false
/// when it existed and IF NOT EXISTS said to leave it.
pub async fn create_iceberg_table(
    catalog: &Arc<dyn Catalog>,
    command: &CreateTableCommand,
) -> Result<bool> {
    let name = format!(
        "{}.{}",
        command.table.namespace().to_url_string(),
        command.table.name()
    );
    let exists = catalog
        .table_exists(&command.table)
        .await
        .map_err(|e| iceberg_error(format!("looking up {name}"), e))?;
    if exists {
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
        .map_err(|e| iceberg_error(format!("creating table {name}"), e))?;
    Ok(true)
}

/// Runs every DDL command but CTAS's query (the caller runs that as an INSERT).
pub async fn run(
    catalog: &Arc<dyn Catalog>,
    swap: Option<&SqlMetadataSwap>,
    command: &Command,
) -> Result<()> {
    match command {
        Command::CreateSchema {
            namespace,
            if_not_exists,
            properties,
        } => {
            let name = namespace.to_url_string();
            let exists = catalog
                .namespace_exists(namespace)
                .await
                .map_err(|e| iceberg_error(format!("looking up schema {name}"), e))?;
            if exists {
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
            let exists = catalog
                .namespace_exists(namespace)
                .await
                .map_err(|e| iceberg_error(format!("looking up schema {name}"), e))?;
            if !exists {
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
                let exists = catalog
                    .table_exists(table)
                    .await
                    .map_err(|e| iceberg_error(format!("looking up table {table}"), e))?;
                if !exists {
                    if *if_exists {
                        continue;
                    }
                    return Err(CoordinatorError::NotFound(format!(
                        "table '{}.{}' not found",
                        table.namespace().to_url_string(),
                        table.name()
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
    }
}

async fn alter_table(
    catalog: &Arc<dyn Catalog>,
    swap: Option<&SqlMetadataSwap>,
    ident: &TableIdent,
    if_exists: bool,
    changes: &[Change],
) -> Result<()> {
    let name = format!("{}.{}", ident.namespace().to_url_string(), ident.name());
    let exists = catalog
        .table_exists(ident)
        .await
        .map_err(|e| iceberg_error(format!("looking up table {name}"), e))?;
    if !exists {
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
                        "ALTER TABLE {name} RENAME COLUMN: Floe commits renames through the SQL \
                         catalog only; iceberg-rust 0.10 has no rename for this catalog"
                    )));
                };
                floe_catalog::overwrite::rename_column(
                    catalog.as_ref(),
                    swap,
                    ident,
                    &name,
                    from,
                    to,
                )
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
