//! Where Floe's tables live: the warehouse, the object-store settings and the catalog.

pub use floe_engine::storage::StorageSettings;

/// The name of Floe's Iceberg catalog: the SQL catalog's `catalog_name` and the SQL catalog
/// (`floe.<namespace>.<table>`) clients see.
pub const CATALOG_NAME: &str = "floe";

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
    Glue(GlueSettings),
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
