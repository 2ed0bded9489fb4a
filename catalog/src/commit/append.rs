//! INSERT INTO and CTAS: the new files appended in one snapshot with iceberg's fast append,
//! committed through the catalog itself.

use std::collections::HashMap;

use datafusion::common::{DataFusionError, Result};
use floe_engine::error::{error_chain, FloeError};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};

use super::retry::Retries;
use super::written_files;

/// Appends the described files in one snapshot. A commit that loses a race re-reads the table
/// and tries again (appends never conflict with appends).
pub(super) async fn commit_append(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    name: &str,
    descriptions: &[String],
) -> Result<()> {
    let fail = |what: &str, e: iceberg::Error| {
        DataFusionError::External(Box::new(FloeError::Unavailable(format!(
            "{what} {name}: {}",
            error_chain(&e)
        ))))
    };
    let mut retries = Retries::new("committing to", name);
    loop {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| fail("loading", e))?;
        let files = written_files(&table, descriptions)
            .map_err(|e| fail("reading the written files of", e))?;
        let mut summary = HashMap::new();
        summary.insert("engine-name".to_string(), "floe".to_string());
        let tx = Transaction::new(&table);
        let append = tx
            .fast_append()
            .with_check_duplicate(false)
            .set_snapshot_properties(summary)
            .add_data_files(files);
        let tx = append
            .apply(tx)
            .map_err(|e| fail("preparing the commit to", e))?;
        match tx.commit(catalog).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts => {
                retries.lost(error_chain(&e)).await?;
            }
            Err(e) => return Err(fail("committing to", e)),
        }
    }
}
