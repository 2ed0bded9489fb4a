//! Opening the Iceberg catalog named by [`CatalogSettings`].

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::SqlCatalogBuilder;

use crate::config::{CatalogKind, CatalogSettings, CATALOG_NAME};
use crate::error::{CatalogError, Result};
use crate::glue::GlueSwap;
use crate::overwrite::{MetadataCommitter, RestCommit, SqlMetadataSwap};
use crate::storage::ObjectStoreStorageFactory;

/// How INSERT OVERWRITE and RENAME COLUMN commit (iceberg-rust has no action for them yet):
/// the SQL catalog's compare-and-swap, Glue's versioned update, or a REST catalog's commit
/// endpoint; `None` for a REST
/// catalog that needs credentials.
pub async fn metadata_committer(
    settings: &CatalogSettings,
) -> Result<Option<Arc<MetadataCommitter>>> {
    match &settings.kind {
        CatalogKind::Sql { uri } => Ok(Some(Arc::new(MetadataCommitter::Sql(
            SqlMetadataSwap::connect(&sql_uri(uri), CATALOG_NAME).await?,
        )))),
        CatalogKind::Rest {
            uri,
            warehouse,
            credential,
        } => Ok(
            RestCommit::connect(uri, warehouse.as_deref(), credential.as_deref())
                .await?
                .map(|r| Arc::new(MetadataCommitter::Rest(r))),
        ),
        CatalogKind::Glue(glue) => Ok(Some(Arc::new(MetadataCommitter::Glue(
            GlueSwap::connect(glue).await,
        )))),
    }
}

/// The SQL catalog URI as sqlx takes it (SQLite files are created when missing).
fn sql_uri(uri: &str) -> String {
    if uri.starts_with("sqlite://") && !uri.contains('?') {
        format!("{uri}?mode=rwc")
    } else {
        uri.to_string()
    }
}

/// Opens the catalog; every FileIO it hands out reads and writes through `object_store`.
pub async fn connect(settings: &CatalogSettings) -> Result<Arc<dyn Catalog>> {
    let factory = Arc::new(ObjectStoreStorageFactory::default());
    let mut props: HashMap<String, String> = settings.storage.file_io_props();
    match &settings.kind {
        CatalogKind::Sql { uri } => {
            if let Some(path) = uri.strip_prefix("sqlite://") {
                let file = path.split('?').next().unwrap_or(path);
                if let Some(parent) = std::path::Path::new(file).parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        CatalogError::Config(format!(
                            "cannot create the catalog folder {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
            }
            let uri = sql_uri(uri);
            let bind_style = if uri.starts_with("postgres") {
                "DollarNumeric"
            } else {
                "QMark"
            };
            props.insert("uri".into(), uri);
            props.insert("warehouse".into(), settings.warehouse.clone());
            props.insert("sql_bind_style".into(), bind_style.into());
            let catalog = SqlCatalogBuilder::default()
                .with_storage_factory(factory)
                .load(CATALOG_NAME, props)
                .await
                .map_err(|e| CatalogError::Unavailable(format!("SQL catalog: {e}")))?;
            Ok(Arc::new(catalog))
        }
        CatalogKind::Rest {
            uri,
            warehouse,
            credential,
        } => {
            props.insert("uri".into(), uri.clone());
            if let Some(w) = warehouse {
                props.insert("warehouse".into(), w.clone());
            }
            if let Some(c) = credential {
                props.insert("credential".into(), c.clone());
            }
            let catalog = RestCatalogBuilder::default()
                .with_storage_factory(factory)
                .load(CATALOG_NAME, props)
                .await
                .map_err(|e| CatalogError::Unavailable(format!("REST catalog at {uri}: {e}")))?;
            Ok(Arc::new(catalog))
        }
        CatalogKind::Glue(glue) => crate::glue::connect(settings, glue).await,
    }
}
