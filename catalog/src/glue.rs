//! The AWS Glue Data Catalog: iceberg's Glue catalog for reads, appends and DDL, and Glue's own
//! client for the metadata-location swap that INSERT OVERWRITE and RENAME COLUMN commit with.
//!
//! Glue's guard against lost commits is the table's `VersionId`: an `UpdateTable` that names
//! the version it read fails with `ConcurrentModificationException` when another writer
//! updated the table since. Both commit paths send it. Within one Floe process, commits to one
//! table also take a lock, so two statements of this coordinator never race each other even
//! where a Glue-compatible service does not check versions (moto, for one, ignores them).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use aws_sdk_glue::operation::get_table::GetTableError;
use aws_sdk_glue::operation::update_table::UpdateTableError;
use aws_sdk_glue::types::TableInput;
use datafusion::common::{DataFusionError, Result as DfResult};
use iceberg::io::S3_ENDPOINT;
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_glue::{GlueCatalog, GlueCatalogBuilder, AWS_REGION_NAME};

use crate::config::{CatalogSettings, CATALOG_NAME};
use crate::error::{CatalogError, Result};
use crate::storage::ObjectStoreStorageFactory;

/// Where Floe's Glue catalog is: the region and endpoint (credentials come the standard AWS
/// way: environment, profile, instance or task role).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlueSettings {
    /// AWS region; the SDK's default chain (`AWS_REGION`, profile) when unset.
    pub region: Option<String>,
    /// An endpoint override (a VPC endpoint, or a Glue-compatible service such as moto).
    pub endpoint: Option<String>,
    /// The Glue catalog id (the AWS account id) when it is not the caller's own.
    pub catalog_id: Option<String>,
}

/// The Glue table parameter holding the current metadata file.
const METADATA_LOCATION: &str = "metadata_location";
/// The Glue table parameter holding the metadata file it replaced.
const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";

/// Commit locks, one per table, for this process.
static COMMIT_LOCKS: LazyLock<Mutex<HashMap<TableIdent, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Runs `commit` holding this process's lock on `ident`.
async fn serialized<T>(ident: &TableIdent, commit: impl std::future::Future<Output = T>) -> T {
    let lock = {
        let mut locks = COMMIT_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(ident.clone()).or_default().clone()
    };
    let result = {
        let _held = lock.lock().await;
        commit.await
    };
    let mut locks = COMMIT_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    // Two references: the map's and ours; nobody else waits, so the entry can go.
    if Arc::strong_count(&lock) == 2 {
        locks.remove(ident);
    }
    result
}

/// Opens the Glue catalog; its FileIO reads and writes through `object_store`.
pub async fn connect(settings: &CatalogSettings, glue: &GlueSettings) -> Result<Arc<dyn Catalog>> {
    let mut props = settings.storage.file_io_props();
    props.insert("warehouse".into(), settings.warehouse.clone());
    if let Some(region) = &glue.region {
        props.insert(AWS_REGION_NAME.into(), region.clone());
    }
    if let Some(id) = &glue.catalog_id {
        props.insert("catalog_id".into(), id.clone());
    }
    if let Some(endpoint) = &glue.endpoint {
        props.insert("uri".into(), endpoint.clone());
        // iceberg's Glue catalog sends S3 requests to the Glue endpoint when no S3 endpoint is
        // set; name AWS S3's own instead.
        if !props.contains_key(S3_ENDPOINT) {
            let region = glue
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok());
            if let Some(region) = region {
                props.insert(
                    S3_ENDPOINT.into(),
                    format!("https://s3.{region}.amazonaws.com"),
                );
            }
        }
    }
    let catalog = GlueCatalogBuilder::default()
        .with_storage_factory(Arc::new(ObjectStoreStorageFactory::default()))
        .load(CATALOG_NAME, props)
        .await
        .map_err(|e| CatalogError::Unavailable(format!("Glue catalog: {e}")))?;
    Ok(Arc::new(SerializedCommits(catalog)))
}

/// iceberg's Glue catalog, its commits taken one at a time per table in this process.
#[derive(Debug)]
struct SerializedCommits(GlueCatalog);

#[async_trait]
impl Catalog for SerializedCommits {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.0.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.0.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.0.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.0.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.0.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.0.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.0.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.0.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.0.load_table(table).await
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.0.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.0.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.0.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        serialized(src, self.0.rename_table(src, dest)).await
    }

    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.0.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let ident = commit.identifier().clone();
        serialized(&ident, self.0.update_table(commit)).await
    }
}

/// Glue's `UpdateTable` with the version read, for commits iceberg-rust has no action for.
#[derive(Debug)]
pub struct GlueSwap {
    client: aws_sdk_glue::Client,
    catalog_id: Option<String>,
}

impl GlueSwap {
    /// A Glue client for the same region, endpoint and credentials as the catalog.
    pub async fn connect(glue: &GlueSettings) -> Self {
        let mut config = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &glue.region {
            config = config.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &glue.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: aws_sdk_glue::Client::new(&config.load().await),
            catalog_id: glue.catalog_id.clone(),
        }
    }

    /// The table's metadata location, if Glue has the table.
    pub(crate) async fn current_location(
        &self,
        ident: &TableIdent,
    ) -> std::result::Result<Option<String>, String> {
        let found = self
            .client
            .get_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(ident.namespace().join("."))
            .name(ident.name())
            .send()
            .await;
        match found {
            Ok(found) => Ok(found
                .table()
                .and_then(|t| t.parameters())
                .and_then(|p| p.get(METADATA_LOCATION))
                .cloned()),
            Err(e) => match e.into_service_error() {
                GetTableError::EntityNotFoundException(_) => Ok(None),
                other => Err(crate::exec::error_chain(&other)),
            },
        }
    }

    /// Points the table at `new` if Glue still points it at `expected`; false if it does not
    /// (another writer committed first, here or anywhere Glue checks the version).
    pub(crate) async fn swap(
        &self,
        ident: &TableIdent,
        expected: &str,
        new: &str,
    ) -> DfResult<bool> {
        serialized(ident, self.swap_unlocked(ident, expected, new)).await
    }

    async fn swap_unlocked(&self, ident: &TableIdent, expected: &str, new: &str) -> DfResult<bool> {
        let database = ident.namespace().join(".");
        let unavailable = |e: String| {
            DataFusionError::External(Box::new(CatalogError::Unavailable(format!(
                "committing {ident} to Glue: {e}"
            ))))
        };
        let current = self
            .client
            .get_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .name(ident.name())
            .send()
            .await
            .map_err(|e| unavailable(crate::exec::error_chain(&e)))?;
        let Some(table) = current.table() else {
            return Err(unavailable("the table is gone".into()));
        };
        let parameters = table.parameters().cloned().unwrap_or_default();
        if parameters.get(METADATA_LOCATION).map(String::as_str) != Some(expected) {
            return Ok(false);
        }
        let mut parameters = parameters;
        parameters.insert(METADATA_LOCATION.into(), new.into());
        parameters.insert(PREVIOUS_METADATA_LOCATION.into(), expected.into());
        let input = TableInput::builder()
            .name(table.name())
            .set_description(table.description().map(str::to_string))
            .set_owner(table.owner().map(str::to_string))
            .set_table_type(table.table_type().map(str::to_string))
            .set_storage_descriptor(table.storage_descriptor().cloned())
            .set_partition_keys(Some(table.partition_keys().to_vec()))
            .set_parameters(Some(parameters))
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        let update = self
            .client
            .update_table()
            .set_catalog_id(self.catalog_id.clone())
            .database_name(&database)
            .set_version_id(table.version_id().map(str::to_string))
            .skip_archive(false)
            .table_input(input)
            .send()
            .await;
        match update {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                UpdateTableError::ConcurrentModificationException(_) => Ok(false),
                other => Err(unavailable(crate::exec::error_chain(&other))),
            },
        }
    }
}
