//! Committing to AWS Glue: the next metadata file is written, then Glue's `UpdateTable` moves
//! the table's `metadata_location` parameter naming the `VersionId` read, so a concurrent
//! writer's update makes it fail (`ConcurrentModificationException`) instead of being lost.
//! Within one process commits to one table also take a lock (`crate::glue::serialized`).

use async_trait::async_trait;
use aws_sdk_glue::operation::get_table::GetTableError;
use aws_sdk_glue::operation::update_table::UpdateTableError;
use aws_sdk_glue::types::TableInput;
use datafusion::common::{DataFusionError, Result};
use floe_engine::error::FloeError;
use iceberg::TableIdent;

use super::swap::LocationSwap;
use crate::glue::{serialized, GlueSettings};

/// The Glue table parameter holding the current metadata file.
const METADATA_LOCATION: &str = "metadata_location";
/// The Glue table parameter holding the metadata file it replaced.
const PREVIOUS_METADATA_LOCATION: &str = "previous_metadata_location";

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
    async fn location_now(
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
                other => Err(floe_engine::error::error_chain(&other)),
            },
        }
    }

    /// Points the table at `new` if Glue still points it at `expected`; false if it does not
    /// (another writer committed first, here or anywhere Glue checks the version).
    async fn swap_unlocked(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<bool> {
        let database = ident.namespace().join(".");
        let unavailable = |e: String| {
            DataFusionError::External(Box::new(FloeError::Unavailable(format!(
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
            .map_err(|e| unavailable(floe_engine::error::error_chain(&e)))?;
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
                other => Err(unavailable(floe_engine::error::error_chain(&other))),
            },
        }
    }
}

#[async_trait]
impl LocationSwap for GlueSwap {
    async fn location(&self, ident: &TableIdent) -> std::result::Result<Option<String>, String> {
        self.location_now(ident).await
    }

    /// Points the table at `new` if Glue still points it at `expected`; false if it does not
    /// (another writer committed first, here or anywhere Glue checks the version).
    async fn swap(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<bool> {
        serialized(ident, self.swap_unlocked(ident, expected, new)).await
    }
}
