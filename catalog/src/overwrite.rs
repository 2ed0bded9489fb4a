//! INSERT OVERWRITE: one Iceberg `overwrite` snapshot that replaces the partitions the new
//! data touches (dynamic partition overwrite), or the whole table when it is unpartitioned.
//!
//! iceberg-rust 0.10 has no public overwrite action, so Floe builds the snapshot itself from
//! iceberg's public pieces: the new files go into a new manifest, manifests holding no file of
//! a replaced partition are kept as they are, the others are rewritten without those files;
//! then a manifest list and the snapshot. [`MetadataCommitter`] commits it: for the SQL catalog
//! Floe writes the next metadata file and does the catalog's compare-and-swap of the table's
//! metadata location itself (the same conditional UPDATE the SQL catalog runs); for a REST
//! catalog it sends the snapshot as a `CommitTableRequest` with the table's UUID and current
//! snapshot as requirements. A commit that loses the race re-reads the table and tries again
//! unless the winner wrote into a partition this statement replaces, which is a conflict.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestContentType, ManifestFile,
    ManifestListWriter, ManifestStatus, ManifestWriterBuilder, Operation, Snapshot, Struct,
    Summary, TableMetadata,
};
use iceberg::spec::{SnapshotReference, SnapshotRetention};
use iceberg::table::Table;
use iceberg::{Catalog, MetadataLocation, TableIdent, TableRequirement, TableUpdate};
use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;

use crate::error::CatalogError;
use crate::exec::error_chain;
use crate::glue::GlueSwap;

/// Commits the metadata changes iceberg-rust 0.10 has no action for (an overwrite snapshot, a
/// renamed schema), with the table as read as the requirement.
#[derive(Debug)]
pub enum MetadataCommitter {
    /// The SQL catalog: Floe writes the metadata file and swaps the location.
    Sql(SqlMetadataSwap),
    /// AWS Glue: Floe writes the metadata file and swaps the location with Glue's version check.
    Glue(GlueSwap),
    /// A REST catalog: Floe sends the updates.
    Rest(RestCommit),
}

impl MetadataCommitter {
    /// Where the catalog points the table now, without loading it (`Ok(None)`: no such
    /// table); `None` where the catalog cannot say without loading it (REST).
    pub async fn current_location(
        &self,
        ident: &TableIdent,
    ) -> Option<std::result::Result<Option<String>, String>> {
        match self {
            MetadataCommitter::Sql(sql) => Some(sql.current_location(ident).await),
            MetadataCommitter::Glue(glue) => Some(glue.current_location(ident).await),
            MetadataCommitter::Rest(_) => None,
        }
    }

    /// Applies `updates` to the table as `table` shows it; false if another commit changed it
    /// first (`requirements` say what "as it shows" means to a REST catalog).
    pub async fn commit(
        &self,
        table: &Table,
        updates: Vec<TableUpdate>,
        requirements: Vec<TableRequirement>,
        name: &str,
    ) -> Result<bool> {
        match self {
            MetadataCommitter::Sql(_) | MetadataCommitter::Glue(_) => {
                let mut builder = table
                    .metadata()
                    .clone()
                    .into_builder(table.metadata_location().map(str::to_string));
                for update in updates {
                    builder = update
                        .apply(builder)
                        .map_err(|e| fail("updating table metadata", e))?;
                }
                let metadata = builder
                    .build()
                    .map_err(|e| fail("building table metadata", e))?
                    .metadata;
                self.swap_in(table, metadata, name).await
            }
            MetadataCommitter::Rest(rest) => {
                rest.commit(table.identifier(), requirements, updates, name)
                    .await
            }
        }
    }

    /// Writes the table's next metadata file and points the catalog at it, if the table is
    /// still where `table` found it; false when another commit got there first.
    async fn swap_in(
        &self,
        table: &Table,
        new_metadata: TableMetadata,
        name: &str,
    ) -> Result<bool> {
        let location = table
            .metadata_location()
            .ok_or_else(|| unavailable(format!("{name} has no metadata location")))?;
        let new_location = MetadataLocation::from_str(location)
            .map_err(|e| fail("parsing the metadata location", e))?
            .with_next_version()
            .with_new_metadata(&new_metadata);
        new_metadata
            .write_to(table.file_io(), &new_location)
            .await
            .map_err(|e| fail("writing table metadata", e))?;
        let (ident, new) = (table.identifier(), new_location.to_string());
        match self {
            MetadataCommitter::Sql(swap) => swap.swap(ident, location, &new).await,
            MetadataCommitter::Glue(swap) => swap.swap(ident, location, &new).await,
            MetadataCommitter::Rest(_) => Err(unavailable(format!(
                "committing {name}: a REST catalog takes updates, not metadata files"
            ))),
        }
    }
}

/// A REST catalog's table-commit endpoint.
#[derive(Debug)]
pub struct RestCommit {
    client: reqwest::Client,
    /// `{uri}/v1[/{prefix}]`
    base: String,
    /// `{uri}/v1/oauth/tokens`
    token_endpoint: String,
    /// OAuth2 client credentials (`id`, `secret`), when the catalog wants them.
    credential: Option<(String, String)>,
}

impl RestCommit {
    /// Reads the catalog's config (its path prefix), authenticating with OAuth2 client
    /// credentials `id:secret` when given.
    pub async fn connect(
        uri: &str,
        warehouse: Option<&str>,
        credential: Option<&str>,
    ) -> crate::error::Result<Option<Self>> {
        let uri = uri.trim_end_matches('/');
        let credential = credential.map(|c| match c.split_once(':') {
            Some((id, secret)) => (id.to_string(), secret.to_string()),
            None => (String::new(), c.to_string()),
        });
        let mut commit = Self {
            client: reqwest::Client::new(),
            base: format!("{uri}/v1"),
            token_endpoint: format!("{uri}/v1/oauth/tokens"),
            credential,
        };
        let config_error =
            |e: String| CatalogError::Unavailable(format!("REST catalog config: {e}"));
        let mut config = commit.client.get(format!("{uri}/v1/config"));
        if let Some(w) = warehouse {
            config = config.query(&[("warehouse", w)]);
        }
        if let Some(token) = commit
            .token()
            .await
            .map_err(|e| config_error(e.to_string()))?
        {
            config = config.bearer_auth(token);
        }
        let config: serde_json::Value = config
            .send()
            .await
            .map_err(|e| config_error(e.to_string()))?
            .json()
            .await
            .map_err(|e| config_error(e.to_string()))?;
        let prefix = ["overrides", "defaults"]
            .iter()
            .find_map(|k| config.get(k)?.get("prefix")?.as_str())
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        if let Some(p) = prefix {
            commit.base = format!("{uri}/v1/{p}");
        }
        Ok(Some(commit))
    }

    /// A fresh OAuth2 access token (client-credentials grant), if the catalog takes credentials.
    async fn token(&self) -> Result<Option<String>> {
        let Some((id, secret)) = &self.credential else {
            return Ok(None);
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", id)
            .append_pair("client_secret", secret)
            .append_pair("scope", "catalog")
            .finish();
        let response: serde_json::Value = self
            .client
            .post(&self.token_endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("REST catalog token: {e}")))?
            .json()
            .await
            .map_err(|e| unavailable(format!("REST catalog token: {e}")))?;
        match response.get("access_token").and_then(|t| t.as_str()) {
            Some(token) => Ok(Some(token.to_string())),
            None => Err(unavailable(format!(
                "REST catalog token: no access_token in {response}"
            ))),
        }
    }

    async fn commit(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
        name: &str,
    ) -> Result<bool> {
        let body = serde_json::json!({
            "identifier": { "namespace": ident.namespace().as_ref(), "name": ident.name() },
            "requirements": requirements,
            "updates": updates,
        });
        let namespace = ident.namespace().join("\u{1f}");
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| unavailable(format!("REST catalog URL {}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|_| unavailable(format!("REST catalog URL {} has no path", self.base)))?
            .extend(["namespaces", namespace.as_str(), "tables", ident.name()]);
        let mut request = self.client.post(url).json(&body);
        if let Some(token) = self.token().await? {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(format!("committing {name}: {e}")))?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            409 => Ok(false),
            status => {
                let text = response.text().await.unwrap_or_default();
                Err(unavailable(format!(
                    "committing {name}: the REST catalog answered {status}: {text}"
                )))
            }
        }
    }
}

/// The SQL catalog's compare-and-swap of a table's metadata location.
#[derive(Debug)]
pub struct SqlMetadataSwap {
    pool: AnyPool,
    catalog_name: String,
    dollar_params: bool,
}

impl SqlMetadataSwap {
    /// Connects to the SQL catalog's database.
    pub async fn connect(uri: &str, catalog_name: &str) -> crate::error::Result<Self> {
        install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(uri)
            .await
            .map_err(|e| CatalogError::Unavailable(format!("SQL catalog for commits: {e}")))?;
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
    async fn current_location(
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
    async fn swap(&self, ident: &TableIdent, expected: &str, new: &str) -> Result<bool> {
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

fn unavailable(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(CatalogError::Unavailable(message)))
}

fn fail(what: &str, e: iceberg::Error) -> DataFusionError {
    unavailable(format!("{what}: {}", error_chain(&e)))
}

use crate::write::{written_files, COMMIT_ATTEMPTS as ATTEMPTS};

/// Replaces the partitions the described files touch (every file of an unpartitioned table)
/// with those files, in one snapshot.
pub async fn commit_overwrite(
    catalog: &dyn Catalog,
    committer: &MetadataCommitter,
    ident: &TableIdent,
    name: &str,
    descriptions: &[String],
) -> Result<()> {
    // The table as the first attempt read it; later attempts (after a lost race) check what was
    // committed since.
    let mut base_snapshot: Option<Option<i64>> = None;
    for attempt in 0..ATTEMPTS {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| fail(&format!("loading {name}"), e))?;
        let metadata = table.metadata();
        let files = written_files(&table, descriptions)
            .map_err(|e| fail("reading the written files", e))?;
        let whole_table = metadata.default_partition_spec().is_unpartitioned();
        let touched: HashSet<Struct> = files.iter().map(|f| f.partition().clone()).collect();
        // After losing a race: the winner must not have written into what this replaces.
        match base_snapshot {
            Some(base) => check_no_conflict(&table, base, &touched, whole_table, name).await?,
            None => base_snapshot = Some(metadata.current_snapshot_id()),
        }

        let snapshot = overwrite_snapshot(&table, files, &touched, whole_table, name).await?;
        let metadata = table.metadata();
        let updates = vec![
            TableUpdate::AddSnapshot {
                snapshot: snapshot.clone(),
            },
            TableUpdate::SetSnapshotRef {
                ref_name: "main".into(),
                reference: SnapshotReference::new(
                    snapshot.snapshot_id(),
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ];
        let requirements = vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: metadata.current_snapshot_id(),
            },
        ];
        if committer
            .commit(&table, updates, requirements, name)
            .await?
        {
            return Ok(());
        }
        tracing::info!(table = name, attempt, "overwrite lost a race, trying again");
        tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt as u64 + 1))).await;
    }
    Err(DataFusionError::External(Box::new(
        CatalogError::Unavailable(format!(
            "overwriting {name}: lost the race to other writers {ATTEMPTS} times"
        )),
    )))
}

/// Fails if a snapshot committed after `base` added or removed files in `touched` partitions.
async fn check_no_conflict(
    table: &Table,
    base: Option<i64>,
    touched: &HashSet<Struct>,
    whole_table: bool,
    name: &str,
) -> Result<()> {
    let metadata = table.metadata();
    let mut snapshot = metadata.current_snapshot().cloned();
    while let Some(s) = snapshot {
        if Some(s.snapshot_id()) == base {
            return Ok(());
        }
        let list = table
            .manifest_list_reader(&s)
            .load()
            .await
            .map_err(|e| fail("reading a manifest list", e))?;
        for manifest in list.entries() {
            if manifest.added_snapshot_id != s.snapshot_id() {
                continue;
            }
            let entries = manifest
                .load_manifest(table.file_io())
                .await
                .map_err(|e| fail("reading a manifest", e))?;
            for entry in entries.entries() {
                let changed = entry.status() != ManifestStatus::Existing
                    && (whole_table || touched.contains(entry.data_file().partition()));
                if changed {
                    return Err(DataFusionError::External(Box::new(tonic_like_conflict(
                        name,
                        s.snapshot_id(),
                    ))));
                }
            }
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p).cloned());
    }
    Ok(())
}

fn tonic_like_conflict(name: &str, snapshot: i64) -> CatalogError {
    CatalogError::Conflict(format!(
        "INSERT OVERWRITE into {name} conflicts with snapshot {snapshot}, committed meanwhile \
         into a partition this statement replaces; nothing was written"
    ))
}

/// The `overwrite` snapshot that replaces the touched partitions with `files` (its manifests and
/// manifest list written).
async fn overwrite_snapshot(
    table: &Table,
    files: Vec<DataFile>,
    touched: &HashSet<Struct>,
    whole_table: bool,
    name: &str,
) -> Result<Snapshot> {
    let metadata = table.metadata();
    let file_io = table.file_io();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().as_ref().clone();
    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.last_sequence_number() + 1;
    let metadata_dir = format!("{}/metadata", metadata.location().trim_end_matches('/'));
    let commit_uuid = uuid::Uuid::new_v4();
    let version = metadata.format_version();
    if version == FormatVersion::V3 {
        return Err(DataFusionError::External(Box::new(
            CatalogError::Unsupported(format!(
                "INSERT OVERWRITE into {name}: Iceberg format version 3 tables"
            )),
        )));
    }
    let mut manifest_count = 0;
    let mut next_manifest = || {
        manifest_count += 1;
        format!("{metadata_dir}/{commit_uuid}-m{manifest_count}.avro")
    };
    let build = |builder: ManifestWriterBuilder| match version {
        FormatVersion::V1 => builder.build_v1(),
        FormatVersion::V2 => builder.build_v2_data(),
        FormatVersion::V3 => builder.build_v3_data(),
    };

    let mut manifests: Vec<ManifestFile> = Vec::new();
    let (mut added_records, mut added_size, added_files) = (0u64, 0u64, files.len() as u64);
    if !files.is_empty() {
        let output = file_io
            .new_output(next_manifest())
            .map_err(|e| fail("creating a manifest", e))?;
        let mut writer = build(ManifestWriterBuilder::new(
            output,
            Some(snapshot_id),
            Arc::clone(&schema),
            spec.clone(),
        ));
        for file in files {
            added_records += file.record_count();
            added_size += file.file_size_in_bytes();
            writer
                .add_file(file, sequence_number)
                .map_err(|e| fail("adding a file to a manifest", e))?;
        }
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(|e| fail("writing a manifest", e))?,
        );
    }

    let (mut deleted_files, mut deleted_records, mut deleted_size) = (0u64, 0u64, 0u64);
    if let Some(current) = metadata.current_snapshot() {
        let list = table
            .manifest_list_reader(current)
            .load()
            .await
            .map_err(|e| fail("reading the manifest list", e))?;
        for manifest in list.entries() {
            if manifest.content != ManifestContentType::Data {
                return Err(DataFusionError::External(Box::new(
                    CatalogError::Unsupported(format!(
                        "INSERT OVERWRITE into {name}: the table has delete files"
                    )),
                )));
            }
            let loaded = manifest
                .load_manifest(file_io)
                .await
                .map_err(|e| fail("reading a manifest", e))?;
            let live: Vec<_> = loaded
                .entries()
                .iter()
                .filter(|e| e.status() != ManifestStatus::Deleted)
                .collect();
            let replaced = |e: &&_| {
                let e: &iceberg::spec::ManifestEntryRef = e;
                whole_table
                    || (manifest.partition_spec_id == spec.spec_id()
                        && touched.contains(e.data_file().partition()))
            };
            if !live.iter().any(replaced) {
                manifests.push(manifest.clone());
                continue;
            }
            let kept: Vec<_> = live.iter().filter(|e| !replaced(e)).collect();
            for e in live.iter().filter(|e| replaced(e)) {
                deleted_files += 1;
                deleted_records += e.data_file().record_count();
                deleted_size += e.data_file().file_size_in_bytes();
            }
            if kept.is_empty() {
                continue;
            }
            let manifest_spec = metadata
                .partition_spec_by_id(manifest.partition_spec_id)
                .map(|s| s.as_ref().clone())
                .unwrap_or_else(|| spec.clone());
            let output = file_io
                .new_output(next_manifest())
                .map_err(|e| fail("creating a manifest", e))?;
            let mut writer = build(ManifestWriterBuilder::new(
                output,
                Some(snapshot_id),
                Arc::clone(&schema),
                manifest_spec,
            ));
            for e in kept {
                if e.content_type() != DataContentType::Data {
                    continue;
                }
                writer
                    .add_existing_file(
                        e.data_file().clone(),
                        e.snapshot_id().unwrap_or(manifest.added_snapshot_id),
                        e.sequence_number().unwrap_or(manifest.sequence_number),
                        Some(e.file_sequence_number.unwrap_or(manifest.sequence_number)),
                    )
                    .map_err(|e| fail("rewriting a manifest", e))?;
            }
            manifests.push(
                writer
                    .write_manifest_file()
                    .await
                    .map_err(|e| fail("writing a manifest", e))?,
            );
        }
    }

    let list_path = format!("{metadata_dir}/snap-{snapshot_id}-0-{commit_uuid}.avro");
    let list_writer = file_io
        .new_output(&list_path)
        .map_err(|e| fail("creating the manifest list", e))?
        .writer()
        .await
        .map_err(|e| fail("creating the manifest list", e))?;
    let parent = metadata.current_snapshot_id();
    let mut list = match version {
        FormatVersion::V1 => ManifestListWriter::v1(list_writer, snapshot_id, parent),
        FormatVersion::V2 => {
            ManifestListWriter::v2(list_writer, snapshot_id, parent, sequence_number)
        }
        FormatVersion::V3 => ManifestListWriter::v3(
            list_writer,
            snapshot_id,
            parent,
            sequence_number,
            Some(metadata.next_row_id()),
        ),
    };
    list.add_manifests(manifests.into_iter())
        .map_err(|e| fail("writing the manifest list", e))?;
    list.close()
        .await
        .map_err(|e| fail("writing the manifest list", e))?;

    let previous = metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    let total = |key: &str| -> u64 { previous.get(key).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let mut summary = HashMap::new();
    let mut put = |k: &str, v: u64| {
        summary.insert(k.to_string(), v.to_string());
    };
    put("added-data-files", added_files);
    put("added-records", added_records);
    put("added-files-size", added_size);
    put("deleted-data-files", deleted_files);
    put("deleted-records", deleted_records);
    put("removed-files-size", deleted_size);
    put(
        "total-data-files",
        (total("total-data-files") + added_files).saturating_sub(deleted_files),
    );
    put(
        "total-records",
        (total("total-records") + added_records).saturating_sub(deleted_records),
    );
    put(
        "total-files-size",
        (total("total-files-size") + added_size).saturating_sub(deleted_size),
    );
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        summary.insert(key.to_string(), "0".to_string());
    }
    summary.insert("engine-name".to_string(), "floe".to_string());
    if !whole_table {
        summary.insert("replace-partitions".to_string(), "true".to_string());
    }
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono_now_ms())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Overwrite,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    Ok(snapshot)
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// ALTER TABLE … RENAME COLUMN: a new current schema in which field `from` is called `to`
/// (same id, so every existing file still reads right), swapped in like an overwrite.
pub async fn rename_column(
    catalog: &dyn Catalog,
    committer: &MetadataCommitter,
    ident: &TableIdent,
    name: &str,
    from: &str,
    to: &str,
) -> Result<()> {
    for attempt in 0..ATTEMPTS {
        let table = catalog
            .load_table(ident)
            .await
            .map_err(|e| fail(&format!("loading {name}"), e))?;
        let metadata = table.metadata();
        let schema = metadata.current_schema();
        if schema.field_by_name(to).is_some() {
            return Err(DataFusionError::External(Box::new(CatalogError::Conflict(
                format!("table {name} already has a column '{to}'"),
            ))));
        }
        let Some(field) = schema.field_by_name(from) else {
            return Err(DataFusionError::External(Box::new(CatalogError::NotFound(
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
        tracing::info!(table = name, attempt, "rename lost a race, trying again");
    }
    Err(unavailable(format!(
        "renaming a column of {name}: lost the race to other writers {ATTEMPTS} times"
    )))
}

/// A positive snapshot id the table does not use yet.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = (uuid::Uuid::new_v4().as_u128() as i64) & i64::MAX;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}
