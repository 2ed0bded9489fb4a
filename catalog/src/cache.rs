//! Tables cached by metadata location. A metadata file never changes once written, so a table
//! loaded from one location is that table for as long as the catalog points there: each load
//! asks the catalog for the table's current pointer (one SQL query, one Glue call) and reads and
//! parses the metadata file only when the pointer moved. The table kept also keeps iceberg's
//! cache of the manifest lists and manifests its scans read (immutable as well, cached by path),
//! so a warm query plans without reading them again.
//!
//! A REST catalog answers a load with the metadata itself, so there every load goes to the
//! catalog, and the cached table (with its warm manifests) is used when the location is the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{Catalog, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

use crate::commit::Committer;

/// How many tables are kept (each with iceberg's manifest cache, at most 32 MiB).
const MAX_TABLES: usize = 64;

/// A catalog whose loads are served from the tables it loaded before, when the catalog still
/// points at the same metadata file.
#[derive(Debug)]
pub struct CachedCatalog {
    inner: Arc<dyn Catalog>,
    /// Reads a table's current metadata location without loading it (SQL and Glue catalogs).
    pointers: Option<Arc<dyn Committer>>,
    tables: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    tables: HashMap<TableIdent, (Table, u64)>,
    tick: u64,
}

impl Cache {
    fn get(&mut self, ident: &TableIdent, location: &str) -> Option<Table> {
        self.tick += 1;
        let tick = self.tick;
        let (table, used) = self.tables.get_mut(ident)?;
        if table.metadata_location() != Some(location) {
            return None;
        }
        *used = tick;
        Some(table.clone())
    }

    fn put(&mut self, table: &Table) {
        if table.metadata_location().is_none() {
            return;
        }
        self.tick += 1;
        if self.tables.len() >= MAX_TABLES && !self.tables.contains_key(table.identifier()) {
            if let Some(oldest) = self
                .tables
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(ident, _)| ident.clone())
            {
                self.tables.remove(&oldest);
            }
        }
        self.tables
            .insert(table.identifier().clone(), (table.clone(), self.tick));
    }

    fn forget(&mut self, ident: &TableIdent) {
        self.tables.remove(ident);
    }
}

impl CachedCatalog {
    /// `inner` with its loads cached; `pointers` reads current locations where the catalog
    /// kind allows (SQL, Glue).
    pub fn wrap(inner: Arc<dyn Catalog>, pointers: Option<Arc<dyn Committer>>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            pointers,
            tables: Mutex::new(Cache::default()),
        })
    }

    fn cached(&self, ident: &TableIdent, location: &str) -> Option<Table> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ident, location)
    }

    fn remember(&self, table: &Table) {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(table);
    }

    fn forget(&self, ident: &TableIdent) {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(ident);
    }
}

#[async_trait]
impl Catalog for CachedCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        if let Some(pointers) = &self.pointers {
            match pointers.current_location(ident).await {
                // The catalog has no such table: its own load says so, in its own words.
                Some(Ok(None)) => self.forget(ident),
                Some(Ok(Some(location))) => {
                    if let Some(table) = self.cached(ident, &location) {
                        return Ok(table);
                    }
                }
                // Could not ask: the load below asks again and reports what goes wrong.
                Some(Err(_)) | None => {}
            }
        }
        let table = self.inner.load_table(ident).await?;
        if let Some(location) = table.metadata_location() {
            if let Some(cached) = self.cached(ident, location) {
                return Ok(cached);
            }
        }
        self.remember(&table);
        Ok(table)
    }

    async fn drop_table(&self, ident: &TableIdent) -> Result<()> {
        self.forget(ident);
        self.inner.drop_table(ident).await
    }

    async fn purge_table(&self, ident: &TableIdent) -> Result<()> {
        self.forget(ident);
        self.inner.purge_table(ident).await
    }

    async fn table_exists(&self, ident: &TableIdent) -> Result<bool> {
        self.inner.table_exists(ident).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.forget(src);
        self.forget(dest);
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(&self, ident: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(ident, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CatalogSettings;
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
    use iceberg::transaction::{ApplyTransactionAction, Transaction};

    #[tokio::test]
    async fn a_load_is_served_from_cache_until_the_catalog_points_elsewhere() {
        let dir = std::env::temp_dir().join(format!("floe-cache-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let settings = CatalogSettings::local(&dir);
        // Another client of the same catalog (another coordinator, pyiceberg, Spark).
        let other = crate::connect(&settings).await.expect("catalog");
        let pointers = crate::connect::metadata_committer(&settings)
            .await
            .expect("committer");
        let cached =
            CachedCatalog::wrap(crate::connect(&settings).await.expect("catalog"), pointers);
        let ns = NamespaceIdent::new("s".into());
        other
            .create_namespace(&ns, HashMap::new())
            .await
            .expect("namespace");
        let schema = Schema::builder()
            .with_fields(vec![NestedField::optional(
                1,
                "a",
                Type::Primitive(PrimitiveType::Long),
            )
            .into()])
            .build()
            .expect("schema");
        let creation = TableCreation::builder()
            .name("t".into())
            .schema(schema)
            .build();
        other.create_table(&ns, creation).await.expect("table");
        let ident = TableIdent::new(ns.clone(), "t".into());

        let first = cached.load_table(&ident).await.expect("load");
        let again = cached.load_table(&ident).await.expect("load");
        assert!(
            Arc::ptr_eq(&first.metadata_ref(), &again.metadata_ref()),
            "the second load reads no metadata file"
        );

        // Another client commits: the next load sees the new metadata, at once.
        let tx = Transaction::new(&first);
        let tx = tx
            .update_table_properties()
            .set("owner".into(), "them".into())
            .apply(tx)
            .expect("action");
        let committed = tx.commit(other.as_ref()).await.expect("commit");
        let after = cached.load_table(&ident).await.expect("load");
        assert_eq!(after.metadata_location(), committed.metadata_location());
        assert_ne!(after.metadata_location(), first.metadata_location());
        assert_eq!(
            after
                .metadata()
                .properties()
                .get("owner")
                .map(String::as_str),
            Some("them")
        );

        // Dropped by the other client: not found, not the cached table.
        other.drop_table(&ident).await.expect("drop");
        let err = cached.load_table(&ident).await.expect_err("dropped");
        assert_eq!(err.kind(), iceberg::ErrorKind::TableNotFound, "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
