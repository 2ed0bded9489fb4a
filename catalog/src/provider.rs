//! DataFusion's view of the Iceberg catalog: catalog → schemas (namespaces) → tables.
//!
//! A query's session holds the tables its statement names, loaded together when it is planned
//! ([`catalog_provider_for`]), so every query sees the catalog as it is then; statements that
//! list the catalog (`SHOW TABLES`, `information_schema`, DDL) get every namespace and table
//! name ([`catalog_provider`]), metadata loaded only for the tables they name. Scanning a table
//! plans its files with Iceberg metadata (manifest and partition pruning, column-bounds
//! pruning) and returns an [`IcebergScanExec`] over the surviving files.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use floe_proto::{DataFileTask, IcebergScanNode, ScanStatistics};
use futures::TryStreamExt;
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableIdent};

use crate::commit::Committer;
use crate::commit::{CommitKind, IcebergCommitExec};
use crate::predicate::filters_to_predicate;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use floe_engine::error::FloeError;
use floe_engine::ipc::encode_schema;
use floe_engine::scan::IcebergScanExec;
use floe_engine::write::{write_node, IcebergWriteExec};

/// What separates a table's name from the point in time it is read at, in the names
/// time-travel clauses are folded into (`orders#snapshot=42`). `#` cannot be part of a table
/// name Floe creates.
pub const TIME_TRAVEL_SEPARATOR: char = '#';

/// A point in a table's history to read it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeTravel {
    /// A snapshot, by id.
    Snapshot(i64),
    /// The snapshot a tag or branch points at.
    Ref(String),
    /// The snapshot that was current at this instant (milliseconds since the epoch).
    At(i64),
}

impl TimeTravel {
    /// The point as the suffix of a folded name.
    pub fn encode(&self) -> String {
        match self {
            TimeTravel::Snapshot(id) => format!("snapshot={id}"),
            TimeTravel::Ref(name) => format!("ref={name}"),
            TimeTravel::At(ms) => format!("at={ms}"),
        }
    }

    /// A folded name's table name and point (none for a plain name).
    pub fn split(name: &str) -> Result<(&str, Option<TimeTravel>)> {
        let Some((table, point)) = name.split_once(TIME_TRAVEL_SEPARATOR) else {
            return Ok((name, None));
        };
        let bad = || DataFusionError::Plan(format!("'{name}' is not a table at a point in time"));
        let (kind, value) = point.split_once('=').ok_or_else(bad)?;
        let point = match kind {
            "snapshot" => TimeTravel::Snapshot(value.parse().map_err(|_| bad())?),
            "ref" => TimeTravel::Ref(value.to_string()),
            "at" => TimeTravel::At(value.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Ok((table, Some(point)))
    }
}

/// Lists the catalog's namespaces and their tables, as a DataFusion catalog.
pub async fn catalog_provider(
    catalog: Arc<dyn Catalog>,
    swap: Option<Arc<dyn Committer>>,
) -> Result<Arc<dyn CatalogProvider>> {
    let namespaces = catalog
        .list_namespaces(None)
        .await
        .map_err(|e| external(FloeError::Unavailable(format!("listing namespaces: {e}"))))?;
    let mut schemas = HashMap::new();
    for ns in namespaces {
        // One namespace the catalog cannot list (left broken by another tool, or by a bug)
        // must not fail every query: it is left out, with a warning, and the rest stay usable.
        let tables = match catalog.list_tables(&ns).await {
            Ok(tables) => tables,
            Err(e) => {
                tracing::warn!(namespace = %ns.to_url_string(), "cannot list tables; schema left out: {e}");
                continue;
            }
        };
        let name = ns.to_url_string();
        let schema = IcebergSchema {
            catalog: Arc::clone(&catalog),
            swap: swap.clone(),
            namespace: ns,
            tables: tables.into_iter().map(|t| t.name).collect(),
            loaded: HashMap::new(),
        };
        schemas.insert(name, Arc::new(schema) as Arc<dyn SchemaProvider>);
    }
    Ok(Arc::new(IcebergCatalog { schemas }))
}

/// The catalog as one statement needs it: only the tables it names (`references`: schema and
/// table name as DataFusion resolved them), loaded together, instead of a listing of every
/// namespace and table. A table the catalog does not have is left out, so planning reports it
/// as not found; one that fails to load is kept, and its load fails again, with its error,
/// when the statement is planned.
pub async fn catalog_provider_for(
    catalog: Arc<dyn Catalog>,
    swap: Option<Arc<dyn Committer>>,
    references: &[(String, String)],
) -> Result<Arc<dyn CatalogProvider>> {
    // A metadata table (`t$files`) or a table at a point in time (`t#snapshot=1`) needs `t`;
    // a table whose name merely looks like one is looked up under its own name too.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (schema, name) in references {
        let mut names = vec![name.as_str()];
        if let (table, Some(_)) = crate::metadata_tables::split(name) {
            names.push(table);
        }
        if let Ok((table, Some(_))) = TimeTravel::split(name) {
            names.push(table);
        }
        for n in names {
            let key = (schema.clone(), n.to_string());
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
    }
    let loads = wanted.iter().map(|(schema, name)| {
        let catalog = Arc::clone(&catalog);
        let ident = TableIdent::new(namespace_of(schema), name.clone());
        async move { catalog.load_table(&ident).await }
    });
    let results = futures::future::join_all(loads).await;
    // Not every catalog says "not found" in so many words (Glue's client does not; a REST
    // catalog may refuse a name it would never hold): where a load failed otherwise, the
    // namespace's listing decides whether the table is there.
    let mut listings: HashMap<String, Option<Vec<String>>> = HashMap::new();
    let mut schemas: HashMap<String, IcebergSchema> = HashMap::new();
    for ((schema, name), result) in wanted.into_iter().zip(results) {
        let loaded = match result {
            Ok(table) => Some(table),
            Err(e)
                if matches!(
                    e.kind(),
                    iceberg::ErrorKind::TableNotFound | iceberg::ErrorKind::NamespaceNotFound
                ) =>
            {
                continue
            }
            Err(_) => {
                if !listings.contains_key(&schema) {
                    let namespace = namespace_of(&schema);
                    let listed = match catalog.list_tables(&namespace).await {
                        Ok(tables) => Some(tables.into_iter().map(|t| t.name).collect()),
                        Err(_) => match catalog.namespace_exists(&namespace).await {
                            Ok(false) => Some(vec![]),
                            _ => None,
                        },
                    };
                    listings.insert(schema.clone(), listed);
                }
                let listed = listings.get(&schema).and_then(Option::as_ref);
                if listed.is_some_and(|tables| !tables.contains(&name)) {
                    continue;
                }
                // Listed (or the catalog cannot be listed either): planning loads it again
                // and reports why it fails.
                None
            }
        };
        let entry = schemas
            .entry(schema.clone())
            .or_insert_with(|| IcebergSchema {
                catalog: Arc::clone(&catalog),
                swap: swap.clone(),
                namespace: namespace_of(&schema),
                tables: vec![],
                loaded: HashMap::new(),
            });
        entry.tables.push(name.clone());
        if let Some(table) = loaded {
            entry.loaded.insert(name, table);
        }
    }
    let schemas = schemas
        .into_iter()
        .map(|(name, schema)| (name, Arc::new(schema) as Arc<dyn SchemaProvider>))
        .collect();
    Ok(Arc::new(IcebergCatalog { schemas }))
}

/// The namespace a schema name stands for (its levels joined as [`NamespaceIdent::to_url_string`]
/// joins them).
fn namespace_of(schema: &str) -> NamespaceIdent {
    NamespaceIdent::from_vec(schema.split('\u{1f}').map(str::to_string).collect())
        .unwrap_or_else(|_| NamespaceIdent::new(schema.to_string()))
}

fn external(e: FloeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[derive(Debug)]
struct IcebergCatalog {
    schemas: HashMap<String, Arc<dyn SchemaProvider>>,
}

impl CatalogProvider for IcebergCatalog {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.schemas.keys().cloned().collect();
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas.get(name).cloned()
    }
}

#[derive(Debug)]
struct IcebergSchema {
    catalog: Arc<dyn Catalog>,
    swap: Option<Arc<dyn Committer>>,
    namespace: NamespaceIdent,
    tables: Vec<String>,
    /// Tables loaded already, by name.
    loaded: HashMap<String, Table>,
}

impl IcebergSchema {
    /// The table named `name` in this namespace, as loaded already or loaded now.
    async fn load(&self, name: &str) -> Result<Table> {
        if let Some(table) = self.loaded.get(name) {
            return Ok(table.clone());
        }
        let ident = TableIdent::new(self.namespace.clone(), name.to_string());
        self.catalog.load_table(&ident).await.map_err(|e| {
            external(FloeError::from_iceberg(
                &format!("loading table {}.{name}", self.namespace.to_url_string()),
                e,
            ))
        })
    }
}

#[async_trait]
impl SchemaProvider for IcebergSchema {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn table_names(&self) -> Vec<String> {
        let mut names = self.tables.clone();
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let (table, Some(kind)) = crate::metadata_tables::split(name) {
            if !self.tables.iter().any(|t| t == name) && self.tables.iter().any(|t| t == table) {
                let qualified = format!("{}.{table}", self.namespace.to_url_string());
                let loaded = self.load(table).await?;
                return crate::metadata_tables::metadata_table(&loaded, &qualified, kind)
                    .await
                    .map(Some);
            }
        }
        let (name, point) = TimeTravel::split(name)?;
        if !self.tables.iter().any(|t| t == name) {
            return Ok(None);
        }
        let table = self.load(name).await?;
        let views = crate::column_stats::category_strings(&table).await;
        let provider =
            IcebergTableProvider::try_new(table, Arc::clone(&self.catalog), self.swap.clone())?
                .with_string_views(views)?;
        Ok(Some(Arc::new(match point {
            Some(point) => provider.at(&point)?,
            None => provider,
        })))
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        // Listing (SHOW TABLES, information_schema) must not load every table's metadata.
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        if let (table, Some(_)) = crate::metadata_tables::split(name) {
            if self.tables.iter().any(|t| t == table) {
                return true;
            }
        }
        let name = TimeTravel::split(name).map(|(n, _)| n).unwrap_or(name);
        self.tables.iter().any(|t| t == name)
    }
}

/// One Iceberg table at its current snapshot.
#[derive(Debug)]
pub struct IcebergTableProvider {
    table: Table,
    catalog: Arc<dyn Catalog>,
    swap: Option<Arc<dyn Committer>>,
    name: String,
    schema: SchemaRef,
    /// The snapshot read (time travel), or None for the current one.
    snapshot: Option<iceberg::spec::SnapshotRef>,
    /// The field ids of the string columns planned as views (see [`planned_schema`]).
    views: HashSet<i32>,
}

impl IcebergTableProvider {
    /// Wraps a loaded table of `catalog`.
    pub fn try_new(
        table: Table,
        catalog: Arc<dyn Catalog>,
        swap: Option<Arc<dyn Committer>>,
    ) -> Result<Self> {
        let ident = table.identifier();
        let name = format!("{}.{}", ident.namespace().to_url_string(), ident.name());
        let views = HashSet::new();
        let schema = planned_schema(&name, table.metadata().current_schema(), &views)?;
        Ok(Self {
            table,
            catalog,
            swap,
            name,
            schema,
            snapshot: None,
            views,
        })
    }

    /// The same table with the string columns whose field ids are in `views` planned as
    /// `Utf8View` (see [`planned_schema`]).
    pub fn with_string_views(mut self, views: HashSet<i32>) -> Result<Self> {
        let schema = self.read_schema()?;
        self.schema = planned_schema(&self.name, &schema, &views)?;
        self.views = views;
        Ok(self)
    }

    /// Whether the table read is still the catalog's current version of it (its metadata file
    /// unchanged): a plan made earlier can then run as made. Not if the table cannot be loaded.
    pub async fn is_current(&self) -> bool {
        match self.catalog.load_table(self.table.identifier()).await {
            Ok(now) => now.metadata_location() == self.table.metadata_location(),
            Err(_) => false,
        }
    }

    /// The same table read at `point`, with the schema of that snapshot.
    pub fn at(mut self, point: &TimeTravel) -> Result<Self> {
        let metadata = self.table.metadata();
        let name = &self.name;
        let not_found = |what: String| external(FloeError::NotFound(what));
        let snapshot = match point {
            TimeTravel::Snapshot(id) => metadata
                .snapshot_by_id(*id)
                .cloned()
                .ok_or_else(|| not_found(format!("table {name} has no snapshot {id}")))?,
            TimeTravel::Ref(reference) => metadata
                .snapshot_for_ref(reference)
                .cloned()
                .ok_or_else(|| {
                    not_found(format!("table {name} has no tag or branch '{reference}'"))
                })?,
            TimeTravel::At(ms) => {
                let shown = chrono_text(*ms);
                let entry = metadata
                    .history()
                    .iter()
                    .rfind(|e| e.timestamp_ms <= *ms)
                    .ok_or_else(|| {
                        let first = metadata
                            .history()
                            .first()
                            .map(|e| {
                                format!(
                                    " (its first snapshot is from {})",
                                    chrono_text(e.timestamp_ms)
                                )
                            })
                            .unwrap_or_default();
                        not_found(format!(
                            "table {name} has no snapshot at or before {shown}{first}"
                        ))
                    })?;
                metadata
                    .snapshot_by_id(entry.snapshot_id)
                    .cloned()
                    .ok_or_else(|| {
                        not_found(format!(
                            "table {name}: snapshot {} (current at {shown}) has expired",
                            entry.snapshot_id
                        ))
                    })?
            }
        };
        let schema = snapshot
            .schema(metadata)
            .map_err(|e| external(FloeError::from_iceberg(&format!("schema of {name}"), e)))?;
        self.schema = planned_schema(name, &schema, &self.views)?;
        self.snapshot = Some(snapshot);
        Ok(self)
    }

    /// The snapshot a scan reads: the time-travel one, or the current one.
    fn read_snapshot(&self) -> Option<&iceberg::spec::SnapshotRef> {
        self.snapshot
            .as_ref()
            .or_else(|| self.table.metadata().current_snapshot())
    }

    /// The Iceberg schema of the snapshot read.
    fn read_schema(&self) -> Result<iceberg::spec::SchemaRef> {
        match &self.snapshot {
            Some(s) => s.schema(self.table.metadata()).map_err(|e| {
                external(FloeError::from_iceberg(
                    &format!("schema of {}", self.name),
                    e,
                ))
            }),
            None => Ok(Arc::clone(self.table.metadata().current_schema())),
        }
    }
}

/// An instant as text, for messages.
fn chrono_text(ms: i64) -> String {
    match arrow::temporal_conversions::timestamp_ms_to_datetime(ms) {
        Some(t) => format!("{} UTC", t.format("%Y-%m-%d %H:%M:%S%.3f")),
        None => format!("{ms} ms"),
    }
}

/// An Iceberg schema as DataFusion plans it: plain columns (the Parquet field ids stay inside
/// Floe), and the top-level string columns whose field ids are in `views` as `Utf8View`
/// (see `floe_engine::views`; which ones: [`crate::column_stats::category_strings`]).
fn planned_schema(
    name: &str,
    schema: &iceberg::spec::Schema,
    views: &HashSet<i32>,
) -> Result<SchemaRef> {
    let arrow_schema = iceberg::arrow::schema_to_arrow_schema(schema)
        .map_err(|e| external(FloeError::Unsupported(format!("schema of {name}: {e}"))))?;
    let fields: Vec<_> = arrow_schema
        .fields()
        .iter()
        .zip(schema.as_struct().fields())
        .map(|(f, iceberg_field)| {
            let field = f.as_ref().clone().with_metadata(Default::default());
            if views.contains(&iceberg_field.id) {
                let t = floe_engine::views::planned_type(f.data_type());
                field.with_data_type(t)
            } else {
                field
            }
        })
        .collect();
    Ok(Arc::new(ArrowSchema::new(fields)))
}

/// How many files and bytes the current snapshot holds, from its summary.
fn snapshot_totals(snapshot: Option<&iceberg::spec::SnapshotRef>) -> (u64, u64) {
    let Some(snapshot) = snapshot else {
        return (0, 0);
    };
    let props = &snapshot.summary().additional_properties;
    let get = |k: &str| props.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (get("total-data-files"), get("total-files-size"))
}

#[async_trait]
impl TableProvider for IcebergTableProvider {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let iceberg_schema = self.read_schema()?;
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let output_schema: ArrowSchema = self.schema.project(&indices)?;
        let mut field_ids = Vec::with_capacity(indices.len());
        for field in output_schema.fields() {
            let id = iceberg_schema
                .field_id_by_name(field.name())
                .ok_or_else(|| {
                    DataFusionError::Internal(format!("no field id for {}", field.name()))
                })?;
            field_ids.push(id);
        }
        let predicate = filters_to_predicate(filters);

        // No columns named: iceberg's planner only copies them into its tasks, which Floe
        // does not read (`field_ids` above), and for each one it names it builds and drops an
        // error ("not a metadata column") that captures a backtrace when RUST_BACKTRACE is set
        // — a stack walk per column of every scan planned (1–2 % of a point query's CPU).
        let mut builder = self.table.scan().select(std::iter::empty::<&str>());
        if let Some(snapshot) = &self.snapshot {
            builder = builder.snapshot_id(snapshot.snapshot_id());
        }
        if let Some(p) = &predicate {
            builder = builder.with_filter(p.clone());
        }
        let scan = builder
            .build()
            .map_err(|e| external(FloeError::Iceberg(e)))?;
        let planning = format!("planning the scan of {}", self.name);
        let plan = async {
            scan.plan_files()
                .await
                .map_err(|e| external(FloeError::from_iceberg(&planning, e)))?
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| external(FloeError::from_iceberg(&planning, e)))
        };
        // The manifests column statistics are read from, read while iceberg plans (it reads
        // them into a cache of its own) when few or cached; else read in the background for
        // later queries, and this one plans without column statistics.
        let with_stats = match self.read_snapshot() {
            Some(snapshot) => crate::column_stats::worth_reading(&self.table, snapshot).await,
            None => false,
        };
        let warm = async {
            if let (true, Some(snapshot)) = (with_stats, self.read_snapshot()) {
                crate::column_stats::prefetch(&self.table, snapshot).await;
            }
        };
        let (tasks, ()) = futures::join!(plan, warm);
        let tasks = tasks?;
        if let (false, Some(snapshot)) = (with_stats, self.read_snapshot()) {
            let (table, snapshot) = (self.table.clone(), Arc::clone(snapshot));
            // A cache fill that outlives the query on purpose (bounded by the manifests).
            #[allow(
                clippy::disallowed_methods,
                reason = "filling the statistics cache outlives the query that asked, by design"
            )]
            tokio::spawn(async move { crate::column_stats::prefetch(&table, &snapshot).await });
        }

        let (files_total, bytes_total) = snapshot_totals(self.read_snapshot());
        // Deletion vectors, and the data file each file-scoped position delete file is for,
        // are planned here (iceberg's planner does not use them); the rest comes with each
        // task (see `deletes`).
        let delete_plan = match self.read_snapshot() {
            Some(snapshot) if tasks.iter().any(|t| !t.deletes.is_empty()) => {
                crate::deletes::plan_deletes(&self.table, snapshot, &self.name).await?
            }
            _ => Default::default(),
        };
        let mut files: Vec<DataFileTask> = tasks
            .iter()
            .map(|t| DataFileTask {
                path: t.data_file_path.clone(),
                file_size_in_bytes: t.file_size_in_bytes,
                start: t.start,
                length: t.length,
                record_count: t.record_count.unwrap_or(0),
                deletes: crate::deletes::delete_refs(t, &delete_plan),
                row_offset: 0,
                row_count: 0,
            })
            .collect();
        // With a LIMIT and no filter, the first files holding enough records are all we need
        // (a file with deletes holds fewer rows than its record count: keep them all).
        let limit = limit.filter(|_| filters.is_empty());
        if let Some(limit) = limit {
            if files
                .iter()
                .all(|f| f.record_count > 0 && f.deletes.is_empty())
            {
                let mut records = 0u64;
                files.retain(|f| {
                    let keep = records < limit as u64;
                    records += f.record_count;
                    keep
                });
            }
        }
        let count_deletes = |content: i32| {
            let mut paths: Vec<(&str, u64)> = files
                .iter()
                .flat_map(|f| f.deletes.iter())
                .filter(|d| d.content == content)
                .map(|d| (d.path.as_str(), d.content_offset))
                .collect();
            paths.sort_unstable();
            paths.dedup();
            paths.len() as u64
        };
        let statistics = ScanStatistics {
            files_total,
            bytes_total,
            files_selected: files.len() as u64,
            bytes_selected: files.iter().map(|f| f.file_size_in_bytes).sum(),
            records_selected: files.iter().map(|f| f.record_count).sum(),
            position_delete_files: count_deletes(crate::deletes::POSITION_DELETES),
            equality_delete_files: count_deletes(crate::deletes::EQUALITY_DELETES),
            deletion_vectors: count_deletes(crate::deletes::DELETION_VECTOR),
        };
        let column_statistics = match self.read_snapshot().filter(|_| with_stats) {
            Some(snapshot) => {
                let selected = files.iter().map(|f| f.path.as_str()).collect();
                crate::column_stats::scan_column_statistics(
                    &self.table,
                    snapshot,
                    &self.name,
                    &selected,
                    &field_ids,
                    &output_schema,
                )
                .await?
            }
            None => vec![],
        };
        let target = state.config().target_partitions().max(1);
        let pieces = crate::file_groups::split_by_rows(files, target);
        // Each value of an identity partition column read by one task, where that spreads as
        // well (an aggregation grouped by it then needs no shuffle); not under a LIMIT, which
        // keeps only the files it needs.
        // (iceberg's tasks do not say which spec their file was written with: only a table of
        // one spec, whose every file has it.)
        let metadata = self.table.metadata();
        let keyed = match limit {
            None if metadata.partition_specs_iter().len() == 1 => {
                crate::file_groups::keyed_by_identity_partition(
                    metadata.default_partition_spec(),
                    &tasks,
                    &pieces,
                    &field_ids,
                    target,
                )
            }
            _ => None,
        };
        let (file_groups, keyed_column) = match keyed {
            Some((groups, column)) => (groups, Some(column as u32)),
            None => (crate::file_groups::balance_by_bytes(pieces, target), None),
        };

        // A lookup by key (the reader then filters rows while decoding): an equality or IN list
        // whose values are few next to the column's range in the manifests (any, unknown).
        let keys_lookup = predicate.as_ref().is_some_and(|p| {
            floe_engine::scan::predicate::is_lookup(p, |column| {
                let i = output_schema.index_of(column).ok()?;
                let stats = column_statistics.get(i)?;
                floe_engine::scan::predicate::values_between(
                    stats.min_value.get_value()?,
                    stats.max_value.get_value()?,
                )
            })
        });
        let node = IcebergScanNode {
            table: self.name.clone(),
            schema_json: serde_json::to_string(iceberg_schema.as_ref())
                .map_err(|e| DataFusionError::Internal(format!("schema to JSON: {e}")))?,
            project_field_ids: field_ids,
            predicate_json: match &predicate {
                Some(p) => serde_json::to_string(p)
                    .map_err(|e| DataFusionError::Internal(format!("predicate to JSON: {e}")))?,
                None => String::new(),
            },
            file_groups,
            statistics: Some(statistics),
            output_schema: encode_schema(&output_schema)?,
            limit: limit.unwrap_or(0) as u64,
            snapshot_id: self
                .read_snapshot()
                .map(|s| s.snapshot_id())
                .unwrap_or_default(),
            keys_lookup,
            keyed_column,
        };
        Ok(Arc::new(
            IcebergScanExec::try_new(node, self.table.file_io().clone())?
                .with_column_statistics(column_statistics),
        ))
    }

    /// INSERT INTO: every partition of `input` is written by an [`IcebergWriteExec`] (on the
    /// executors, next to the input's last stage), and one [`IcebergCommitExec`] on the
    /// coordinator commits all files in one snapshot.
    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(snapshot) = &self.snapshot {
            return Err(external(FloeError::Unsupported(format!(
                "writing {} at snapshot {}: write to the table itself",
                self.name,
                snapshot.snapshot_id()
            ))));
        }
        let kind = match (insert_op, &self.swap) {
            (InsertOp::Append, _) => CommitKind::Append,
            (InsertOp::Overwrite, Some(swap)) => CommitKind::Overwrite(Arc::clone(swap)),
            (InsertOp::Overwrite, None) => {
                return Err(external(FloeError::Unsupported(format!(
                    "INSERT OVERWRITE into {}: this REST catalog needs credentials, which \
                     Floe's overwrite commit does not send yet",
                    self.name
                ))))
            }
            (InsertOp::Replace, _) => {
                return Err(external(FloeError::Unsupported(format!(
                    "REPLACE INTO {}",
                    self.name
                ))))
            }
        };
        let write_id = uuid::Uuid::new_v4().to_string();
        let mut node = write_node(&self.table, &self.name, &write_id)?;
        if let Some(size) = state
            .config()
            .get_extension::<floe_engine::write::WriteSettings>()
            .and_then(|w| w.target_file_size)
        {
            node.target_file_size = size;
        }
        let write = Arc::new(IcebergWriteExec::try_new(
            node,
            input,
            self.table.file_io().clone(),
        )?);
        let gathered = Arc::new(CoalescePartitionsExec::new(write));
        Ok(Arc::new(IcebergCommitExec::new(
            gathered,
            Arc::clone(&self.catalog),
            self.table.identifier().clone(),
            self.name.clone(),
            kind,
        )))
    }
}
