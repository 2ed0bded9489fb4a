//! Committing to the SQL catalog: the next metadata file is written, then the catalog's row is
//! moved to it with the same conditional UPDATE the SQL catalog runs (compare-and-swap on the
//! metadata location).

use async_trait::async_trait;
use datafusion::common::Result;
use floe_engine::error::FloeError;
use iceberg::TableIdent;
use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;

use super::swap::LocationSwap;
use super::unavailable;

/// The SQL catalog's compare-and-swap of a table's metadata location.
#[derive(Debug)]
pub struct SqlMetadataSwap {
    pool: AnyPool,
    catalog_name: String,
    dollar_params: bool,
}

impl SqlMetadataSwap {
    /// Connects to the SQL catalog's database.
    pub async fn connect(uri: &str, catalog_name: &str) -> floe_engine::error::Result<Self> {
        install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(uri)
            .await
            .map_err(|e| FloeError::Unavailable(format!("SQL catalog for commits: {e}")))?;
        Ok(Self {
            pool,
            catalog_name: catalog_name.to_string(),
            dollar_params: uri.starts_with("postgres"),
        })
    }

    /// Bind parameter `i` as the database spells it (`$i` on PostgreSQL, `?` elsewhere).
    fn placeholder(&self, i: usize) -> String {
        if self.dollar_params {
            format!("${i}")
        } else {
            "?".to_string()
        }
    }

    /// The table's metadata location, if the catalog has the table.
    async fn location_now(
        &self,
        ident: &TableIdent,
    ) -> std::result::Result<Option<String>, String> {
        let p = |i: usize| self.placeholder(i);
        let sql = format!(
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = {} \
             AND table_namespace = {} AND table_name = {} \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
            p(1),
            p(2),
            p(3)
        );
        let row: Option<(Option<String>,)> = sqlx::query_as(&sql)
            .bind(&self.catalog_name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| format!("looking up {ident}: {e}"))?;
        Ok(row.and_then(|(location,)| location))
    }

    /// Points the table at `new` if it still points at `expected`; false if it did not.
    async fn swap_pointer(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<bool> {
        let p = |i: usize| self.placeholder(i);
        let sql = format!(
            "UPDATE iceberg_tables SET metadata_location = {}, previous_metadata_location = {} \
             WHERE catalog_name = {} AND table_namespace = {} AND table_name = {} \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6)
        );
        let result = sqlx::query(&sql)
            .bind(new)
            .bind(expected)
            .bind(&self.catalog_name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(expected)
            .execute(&self.pool)
            .await
            .map_err(|e| unavailable(format!("committing {ident}: {e}")))?;
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl LocationSwap for SqlMetadataSwap {
    async fn location(&self, ident: &TableIdent) -> std::result::Result<Option<String>, String> {
        self.location_now(ident).await
    }

    async fn swap(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<bool> {
        self.swap_pointer(ident, expected, new).await
    }
}
