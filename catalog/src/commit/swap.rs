//! Committing by writing the table's next metadata file and swapping the catalog's pointer to
//! it (the SQL catalog and Glue): the updates are applied to the metadata as read, the file
//! is written beside it, and the pointer moves only if it still names the file read.

use std::str::FromStr;

use async_trait::async_trait;
use datafusion::common::Result;
use iceberg::table::Table;
use iceberg::{MetadataLocation, TableIdent, TableRequirement, TableUpdate};

use super::{fail, unavailable, Committer};

/// A catalog whose table pointer Floe moves itself; every one commits the same way.
#[async_trait]
pub(super) trait LocationSwap {
    /// The table's metadata location now, if the catalog has the table.
    async fn location(&self, ident: &TableIdent) -> std::result::Result<Option<String>, String>;

    /// Points the table at `new` if it still points at `expected`; false if it does not.
    async fn swap(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<bool>;
}

#[async_trait]
impl<S: LocationSwap + std::fmt::Debug + Send + Sync> Committer for S {
    async fn current_location(
        &self,
        ident: &TableIdent,
    ) -> Option<std::result::Result<Option<String>, String>> {
        Some(self.location(ident).await)
    }

    async fn commit(
        &self,
        table: &Table,
        updates: Vec<TableUpdate>,
        _requirements: Vec<TableRequirement>,
        name: &str,
    ) -> Result<bool> {
        write_and_swap(self, table, updates, name).await
    }
}

/// Applies `updates` to `table`'s metadata, writes the next metadata file and swaps it in;
/// false when another commit moved the pointer first.
async fn write_and_swap(
    swap: &(impl LocationSwap + Sync),
    table: &Table,
    updates: Vec<TableUpdate>,
    name: &str,
) -> Result<bool> {
    let location = table
        .metadata_location()
        .ok_or_else(|| unavailable(format!("{name} has no metadata location")))?;
    let mut builder = table
        .metadata()
        .clone()
        .into_builder(Some(location.to_string()));
    for update in updates {
        builder = update
            .apply(builder)
            .map_err(|e| fail("updating table metadata", e))?;
    }
    let new_metadata = builder
        .build()
        .map_err(|e| fail("building table metadata", e))?
        .metadata;
    let new_location = MetadataLocation::from_str(location)
        .map_err(|e| fail("parsing the metadata location", e))?
        .with_next_version()
        .with_new_metadata(&new_metadata);
    new_metadata
        .write_to(table.file_io(), &new_location)
        .await
        .map_err(|e| fail("writing table metadata", e))?;
    swap.swap(table.identifier(), location, &new_location.to_string())
        .await
}
