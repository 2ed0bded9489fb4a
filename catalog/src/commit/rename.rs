//! ALTER TABLE … RENAME COLUMN: a new current schema in which the field keeps its id under its
//! new name, so every existing data file still reads right.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use floe_engine::error::FloeError;
use iceberg::{Catalog, TableIdent, TableRequirement, TableUpdate};

use super::retry::Retries;
use super::{fail, Committer};

/// ALTER TABLE … RENAME COLUMN: a new current schema in which field `from` is called `to`
/// (same id, so every existing file still reads right), swapped in like an overwrite.
pub async fn rename_column(
    catalog: &dyn Catalog,
    committer: &dyn Committer,
    ident: &TableIdent,
    name: &str,
    from: &str,
    to: &str,
) -> Result<()> {
    let mut retries = Retries::new("renaming a column of", name);
    loop {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| fail(&format!("loading {name}"), e))?;
        let metadata = table.metadata();
        let schema = metadata.current_schema();
        if schema.field_by_name(to).is_some() {
            return Err(DataFusionError::External(Box::new(FloeError::Conflict(
                format!("table {name} already has a column '{to}'"),
            ))));
        }
        let Some(field) = schema.field_by_name(from) else {
            return Err(DataFusionError::External(Box::new(FloeError::NotFound(
                format!("table {name} has no column '{from}'"),
            ))));
        };
        let renamed_id = field.id;
        let fields: Vec<_> = schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| {
                if f.id == renamed_id {
                    let mut renamed = f.as_ref().clone();
                    renamed.name = to.to_string();
                    Arc::new(renamed)
                } else {
                    Arc::clone(f)
                }
            })
            .collect();
        let new_schema = iceberg::spec::Schema::builder()
            .with_fields(fields)
            .with_identifier_field_ids(schema.identifier_field_ids())
            .build()
            .map_err(|e| fail("building the renamed schema", e))?;
        let updates = vec![
            TableUpdate::AddSchema { schema: new_schema },
            TableUpdate::SetCurrentSchema { schema_id: -1 },
        ];
        let requirements = vec![TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: metadata.current_schema_id(),
        }];
        if committer
            .commit(&table, updates, requirements, name)
            .await?
        {
            return Ok(());
        }
        retries.lost("another commit changed the schema").await?;
    }
}
