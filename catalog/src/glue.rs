//! The AWS Glue Data Catalog: iceberg's Glue catalog for reads, appends and DDL (Glue's own
//! client swaps the metadata location for INSERT OVERWRITE and RENAME COLUMN: `commit::glue`).
//!
//! Glue's guard against lost commits is the table's `VersionId`: an `UpdateTable` that names
//! the version it read fails with `ConcurrentModificationException` when another writer
//! updated the table since. Both commit paths send it. Within one Floe process, commits to one
//! table also take a lock, so two statements of this coordinator never race each other even
//! where a Glue-compatible service does not check versions (moto, for one, ignores them).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use iceberg::io::S3_ENDPOINT;
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_glue::{GlueCatalog, GlueCatalogBuilder, AWS_REGION_NAME};

use crate::config::{CatalogSettings, CATALOG_NAME};
use floe_engine::error::{FloeError, Result};
use floe_engine::storage::ObjectStoreStorageFactory;

pub use crate::config::GlueSettings;

/// Commit locks, one per table, for this process.
static COMMIT_LOCKS: LazyLock<Mutex<HashMap<TableIdent, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Runs `commit` holding this process's lock on `ident`.
pub(crate) async fn serialized<T>(
    ident: &TableIdent,
    commit: impl std::future::Future<Output = T>,
) -> T {
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
        .map_err(|e| FloeError::Unavailable(format!("Glue catalog: {e}")))?;
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
