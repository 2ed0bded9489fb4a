//! Opening the Iceberg catalog named by [`CatalogSettings`].

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::SqlCatalogBuilder;

use floe_engine::error::{FloeError, Result};
use floe_engine::storage::ObjectStoreStorageFactory;

use crate::commit::{Committer, GlueSwap, RestCommit, SqlMetadataSwap};
use crate::config::{CatalogKind, CatalogSettings, CATALOG_NAME};

/// How INSERT OVERWRITE and RENAME COLUMN commit (iceberg-rust has no action for them yet):
/// the SQL catalog's compare-and-swap, Glue's versioned update, or a REST catalog's commit
/// endpoint.
pub async fn metadata_committer(settings: &CatalogSettings) -> Result<Option<Arc<dyn Committer>>> {
    match &settings.kind {
        CatalogKind::Sql { uri } => Ok(Some(Arc::new(
            SqlMetadataSwap::connect(&sql_uri(uri), CATALOG_NAME).await?,
        ))),
        CatalogKind::Rest {
            uri,
            warehouse,
            credential,
        } => Ok(
            RestCommit::connect(uri, warehouse.as_deref(), credential.as_deref())
                .await?
                .map(|r| Arc::new(r) as Arc<dyn Committer>),
        ),
        CatalogKind::Glue(glue) => Ok(Some(Arc::new(GlueSwap::connect(glue).await))),
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
                        FloeError::Config(format!(
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
                .map_err(|e| FloeError::Unavailable(format!("SQL catalog: {e}")))?;
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
                .map_err(|e| FloeError::Unavailable(format!("REST catalog at {uri}: {e}")))?;
            Ok(Arc::new(catalog))
        }
        CatalogKind::Glue(glue) => crate::glue::connect(settings, glue).await,
    }
}
