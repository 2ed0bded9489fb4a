//! Where Floe's tables live: the warehouse, the object-store settings and the catalog.

use std::collections::HashMap;

use crate::storage::{
    S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
};

/// The name of Floe's Iceberg catalog: the SQL catalog's `catalog_name` and the SQL catalog
/// (`floe.<namespace>.<table>`) clients see.
pub const CATALOG_NAME: &str = "floe";

/// Object-store settings shared by the catalog's FileIO and every executor's reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageSettings {
    /// S3 endpoint, for S3-compatible servers (SeaweedFS, MinIO).
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// S3 access key id.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    pub s3_secret_access_key: Option<String>,
    /// Path-style requests instead of virtual-hosted buckets.
    pub s3_path_style: bool,
}

impl StorageSettings {
    /// The settings as Iceberg FileIO properties.
    pub fn file_io_props(&self) -> HashMap<String, String> {
        let mut props = HashMap::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                props.insert(k.to_string(), v.clone());
            }
        };
        put(S3_ENDPOINT, &self.s3_endpoint);
        put(S3_REGION, &self.s3_region);
        put(S3_ACCESS_KEY_ID, &self.s3_access_key_id);
        put(S3_SECRET_ACCESS_KEY, &self.s3_secret_access_key);
        if self.s3_path_style {
            props.insert(S3_PATH_STYLE_ACCESS.to_string(), "true".to_string());
        }
        props
    }
}

/// Which Iceberg catalog holds the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogKind {
    /// The Iceberg SQL (JDBC-schema) catalog on SQLite or PostgreSQL.
    Sql {
        /// `sqlite:///path/catalog.db?mode=rwc` or `postgres://user:pw@host/db`.
        uri: String,
    },
    /// An Iceberg REST catalog.
    Rest {
        /// Base URI, e.g. `http://127.0.0.1:8181`.
        uri: String,
        /// The catalog's `warehouse` parameter, if it needs one.
        warehouse: Option<String>,
        /// OAuth2 client credentials `id:secret`, if it needs them.
        credential: Option<String>,
    },
    /// The AWS Glue Data Catalog.
    Glue(crate::glue::GlueSettings),
}

/// Everything needed to open Floe's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    /// Where new tables go: `file:///dir` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// The catalog.
    pub kind: CatalogKind,
    /// Object-store settings.
    pub storage: StorageSettings,
}

impl CatalogSettings {
    /// The embedded default: a local warehouse folder with its SQLite SQL catalog inside it.
    pub fn local(dir: &std::path::Path) -> Self {
        let dir = dir.display().to_string();
        let dir = dir.trim_end_matches('/');
        CatalogSettings {
            warehouse: format!("file://{dir}"),
            kind: CatalogKind::Sql {
                uri: format!("sqlite://{dir}/catalog.db?mode=rwc"),
            },
            storage: StorageSettings::default(),
        }
    }
}
