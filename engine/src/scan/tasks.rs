//! What one partition of a scan reads: its files, each with the deletes Floe applies itself,
//! and how DataFusion's Parquet reader reads it (columns, predicate, dynamic filters).

use std::collections::HashSet;

use super::predicate::all_of;
use super::*;

impl IcebergScanExec {
    /// How DataFusion's reader reads the columns `field_ids` (the output columns, then any
    /// equality-delete columns), or `None` when one is nested: iceberg's reader maps nested
    /// fields by id, which DataFusion's cannot. With `views`, the string and binary columns
    /// the predicate reads are decoded as views ([`predicate::decoded_as`]).
    fn datafusion_read(
        &self,
        field_ids: &[i32],
        arrow_schema: &arrow::datatypes::Schema,
        views: bool,
    ) -> Option<DataFusionRead> {
        if iceberg_reader_forced() {
            return None;
        }
        let fields = field_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let field = self.iceberg_schema.field_by_id(*id)?;
                if !field.field_type.is_primitive() {
                    return None;
                }
                match self.output_schema.fields().get(i) {
                    Some(output) => Some(output.as_ref().clone()),
                    None => arrow_schema
                        .fields()
                        .iter()
                        .find(|f| {
                            f.metadata().get(parquet::arrow::PARQUET_FIELD_ID_META_KEY)
                                == Some(&id.to_string())
                        })
                        .map(|f| f.as_ref().clone().with_metadata(Default::default())),
                }
            })
            .collect::<Option<Vec<_>>>()?;
        // The reader filters rows while decoding (late materialization) only where that pays:
        // for a lookup by key, and for a hash join's keys or a TopK's bound handed in when the
        // scan also reads string or binary columns the dynamic filter does not test, and
        // decoding them costs more per row than the key lookup the row filter then makes on
        // every row: a column nothing tests (decoded only for the rows that pass), or two the
        // predicate tests (Q19's lineitem: the join's part keys keep 0.24 % of the rows, and
        // the ship mode and instruction are then decoded and tested for those alone). One
        // column the predicate tests is cheaper to decode and test for every row, the key
        // looked up only in the rows that pass: Q10's lineitem, whose return flag is its only
        // string (orders ⋈ lineitem of Q10, cluster, 11 runs twice: 164, 165 → 142, 144 ms,
        // CPU 299, 293 → 259, 251 ms). Otherwise it decodes whole batches and
        // the filter above the scan (or the join's probe) keeps the rows, as a row filter decodes
        // its columns twice, evaluates a join's key lookup on every row and the others row by
        // selected row: TPC-H SF1 in a cluster 2–4 % faster in all for range and category
        // filters (Q12, Q04, Q20 and Q15 14–27 %; Q19's part scan, an OR of string tests keeping
        // 2 % of the rows: 100 → 20 ms), and again for probe sides of fixed-width columns only
        // (Q03, Q05, Q07, Q09, Q21).
        let dynamic_columns = self
            .dynamic_filters
            .iter()
            .flat_map(collect_columns)
            .map(|c| c.name().to_string())
            .collect::<HashSet<_>>();
        let tested = self
            .predicate
            .as_ref()
            .map(self::predicate::predicate_columns)
            .unwrap_or_default();
        let row_filter = (!self.dynamic_filters.is_empty()
            && late_decoding_pays(&fields, &dynamic_columns, &tested))
            || self.node.keys_lookup;
        // Without a row filter, the predicate keeps its rows right after decoding, before they
        // leave the scan, testing its conjuncts one after another on the rows the ones before
        // kept ([`super::parquet_read::keep_passing`]); the exact filter above the scan then
        // passes what is left.
        let filter_batches = !row_filter && !tested.is_empty();
        // Columns the predicate tests row by row (a row filter, or the batch filter) are
        // decoded as string/binary views: a view only points into the page's bytes (no copy
        // per value); the rows that pass are cast back to the plan's type on the way out.
        let mut filtered = if views && (row_filter || filter_batches) {
            tested
        } else {
            Default::default()
        };
        // A dynamic filter compares a column as the plan types it.
        for c in &dynamic_columns {
            filtered.remove(c);
        }
        let fields = fields
            .into_iter()
            .map(|f| {
                let filtered = filtered.contains(f.name());
                self::predicate::decoded_as(f, filtered)
            })
            .collect::<Vec<_>>();
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let (lookups, others) = self
            .predicate
            .as_ref()
            .map(|p| self::predicate::physical_conjuncts(p, &schema))
            .unwrap_or_default();
        // Short string literals are compared as views there (`short_strings`).
        let batch_filter = all_of(lookups.iter().chain(&others).cloned())
            .filter(|_| filter_batches)
            .map(|f| self::short_strings::rewrite(f, &schema));
        // The row filter tests these in order, each on the rows the ones before kept (the
        // reader does not reorder them): lookups by key, then the hash join's keys or the
        // TopK's bound, then the rest. DataFusion's own order, by the columns' compressed size,
        // put a dictionary-encoded category (Q19's ship mode and instruction, decoded as
        // strings for every row) before the join's part keys that keep 0.24 % of lineitem:
        // Q19 in a cluster 196 → 146 ms.
        let predicate = all_of(
            lookups
                .into_iter()
                .chain(self.dynamic_filters.iter().cloned())
                .chain(others),
        );
        Some(DataFusionRead {
            schema,
            field_ids: field_ids.to_vec(),
            predicate,
            row_filter,
            batch_filter,
        })
    }

    /// The reader's tasks for partition `partition`, each with the deletes Floe applies to it.
    pub(super) fn file_tasks(&self, partition: usize) -> Result<Vec<FileRead>> {
        let Some(group) = self.node.file_groups.get(partition) else {
            return Ok(vec![]);
        };
        let predicate = match &self.predicate {
            Some(p) => Some(
                p.bind(Arc::clone(&self.iceberg_schema), true)
                    .map_err(|e| {
                        DataFusionError::Plan(format!("cannot bind scan predicate: {e}"))
                    })?,
            ),
            None => None,
        };
        let arrow_schema = iceberg::arrow::schema_to_arrow_schema(&self.iceberg_schema)
            .map_err(|e| DataFusionError::Plan(format!("scan schema: {e}")))?;
        let project_field_ids = if self.node.project_field_ids.is_empty() {
            // No column needed (e.g. COUNT(*)): read the narrowest-to-find one, keep only row counts.
            self.iceberg_schema
                .as_struct()
                .fields()
                .iter()
                .find(|f| f.field_type.is_primitive())
                .map(|f| vec![f.id])
                .unwrap_or_default()
        } else {
            self.node.project_field_ids.clone()
        };
        group
            .files
            .iter()
            .map(|f| {
                let vector = f
                    .deletes
                    .iter()
                    .find(|d| d.content == self::deletes::DELETION_VECTOR)
                    .cloned();
                // Position delete files (a file with a vector ignores them: it holds them all).
                let positional: Vec<DeleteFileRef> = f
                    .deletes
                    .iter()
                    .filter(|d| d.content == self::deletes::POSITION_DELETES && vector.is_none())
                    .cloned()
                    .collect();
                // A piece of the file by rows (see `file_groups::split_by_rows`).
                let rows = (f.row_count > 0)
                    .then(|| f.row_offset..f.row_offset.saturating_add(f.row_count));
                let by_position = vector.is_some() || !positional.is_empty() || rows.is_some();
                if by_position
                    && (f.start != 0 || (f.length != 0 && f.length != f.file_size_in_bytes))
                {
                    return Err(DataFusionError::Internal(format!(
                        "table {}: data file {} with position deletes was split",
                        self.node.table, f.path
                    )));
                }
                // Equality deletes are matched by Floe on their columns, read with the file.
                let equality: Vec<DeleteFileRef> = f
                    .deletes
                    .iter()
                    .filter(|d| d.content == self::deletes::EQUALITY_DELETES)
                    .cloned()
                    .collect();
                let mut field_ids = project_field_ids.clone();
                for id in EqualityDeletes::field_ids(&equality) {
                    if !field_ids.contains(&id) {
                        field_ids.push(id);
                    }
                }
                let columns = field_ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (*id, i))
                    .collect();
                // Equality deletes compare their columns as the table types them: no views then.
                let datafusion =
                    self.datafusion_read(&field_ids, &arrow_schema, equality.is_empty());
                let task = FileScanTask {
                    file_size_in_bytes: f.file_size_in_bytes,
                    start: f.start,
                    length: f.length,
                    record_count: (f.record_count > 0).then_some(f.record_count),
                    data_file_path: f.path.clone(),
                    data_file_format: DataFileFormat::Parquet,
                    schema: Arc::clone(&self.iceberg_schema),
                    project_field_ids: field_ids,
                    // A file with position deletes is read whole and in order (no row group,
                    // page or row skipped), so row positions are known; the filter above the
                    // scan still applies the predicate.
                    predicate: if by_position { None } else { predicate.clone() },
                    // Floe applies every delete itself (see `deletes`).
                    deletes: vec![],
                    partition: None,
                    partition_spec: None,
                    name_mapping: None,
                    case_sensitive: true,
                };
                Ok(FileRead {
                    task,
                    rows,
                    datafusion,
                    vector,
                    positional,
                    equality,
                    columns,
                })
            })
            .collect()
    }
}

/// One data file to read, with the deletes Floe applies itself.
pub(super) struct FileRead {
    /// What iceberg's reader reads (and where DataFusion's reader reads).
    pub(super) task: FileScanTask,
    /// The rows of the file this task reads, when only a piece.
    pub(super) rows: Option<std::ops::Range<u64>>,
    /// How DataFusion's Parquet reader reads it; `None`: iceberg's reader does.
    pub(super) datafusion: Option<DataFusionRead>,
    /// The file's deletion vector.
    pub(super) vector: Option<DeleteFileRef>,
    /// Its position delete files (none when it has a vector).
    pub(super) positional: Vec<DeleteFileRef>,
    /// Its equality delete files.
    pub(super) equality: Vec<DeleteFileRef>,
    /// The output column of each field id read.
    pub(super) columns: std::collections::BTreeMap<i32, usize>,
}

/// What DataFusion's Parquet reader needs besides the file (see [`parquet_read`]).
pub(super) struct DataFusionRead {
    /// The columns read, in order.
    pub(super) schema: SchemaRef,
    /// Their field ids.
    pub(super) field_ids: Vec<i32>,
    /// The scan predicate over them.
    pub(super) predicate: Option<Arc<dyn PhysicalExpr>>,
    /// Whether the reader filters rows with it while decoding (it always prunes with it).
    pub(super) row_filter: bool,
    /// The scan's own predicate (no dynamic filter), to keep the rows of each decoded batch
    /// that pass it before they leave the scan, if it does that.
    pub(super) batch_filter: Option<Arc<dyn PhysicalExpr>>,
}

/// Which reader reads data files: DataFusion's Parquet reader (`datafusion`, the default) or
/// iceberg's (`iceberg`, set `FLOE_SCAN_READER=iceberg` — for comparing the two in benchmarks).
fn iceberg_reader_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var("FLOE_SCAN_READER").is_ok_and(|v| v.eq_ignore_ascii_case("iceberg"))
    })
}

/// Whether the string or binary columns among `fields` that a dynamic filter (on
/// `dynamic_columns`) does not test cost more to decode and test for every row than the key
/// lookup a row filter makes on every row: one no predicate tests (the row filter decodes it only
/// for the rows that pass), or two or more the scan's predicate (on `tested`) tests.
fn late_decoding_pays(
    fields: &[arrow::datatypes::Field],
    dynamic_columns: &HashSet<String>,
    tested: &HashSet<String>,
) -> bool {
    let mut wide_tested = 0;
    for f in fields {
        if is_variable_width(f.data_type()) && !dynamic_columns.contains(f.name()) {
            if !tested.contains(f.name()) {
                return true;
            }
            wide_tested += 1;
        }
    }
    wide_tested > 1
}

/// Whether values of `data_type` have a length of their own (strings and binaries): the columns
/// whose decoding a row filter saves for the rows it drops. (Nested columns are not read here.)
fn is_variable_width(data_type: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::*;
    matches!(
        data_type,
        Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn names(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn late_decoding_pays_for_untested_strings_or_two_tested_ones() {
        let field = |name: &str, t: DataType| Field::new(name, t, true);
        let key = field("l_orderkey", DataType::Int64);
        let price = field("l_extendedprice", DataType::Float64);
        let flag = field("l_returnflag", DataType::Utf8);
        let mode = field("l_shipmode", DataType::Utf8View);
        let comment = field("l_comment", DataType::Utf8);
        let dynamic = names(&["l_orderkey"]);
        // Q10's lineitem: the one string is the predicate's.
        let q10 = [key.clone(), price.clone(), flag.clone()];
        assert!(!late_decoding_pays(
            &q10,
            &dynamic,
            &names(&["l_returnflag"])
        ));
        // Q19's: two strings tested.
        let q19 = [key.clone(), price.clone(), flag.clone(), mode];
        assert!(late_decoding_pays(
            &q19,
            &dynamic,
            &names(&["l_returnflag", "l_shipmode"])
        ));
        // A string nothing tests is decoded only for the rows that pass.
        let payload = [key.clone(), price.clone(), comment];
        assert!(late_decoding_pays(&payload, &dynamic, &names(&[])));
        // Fixed-width columns only, or the string is the dynamic filter's own key.
        assert!(!late_decoding_pays(&[key, price], &dynamic, &names(&[])));
        assert!(!late_decoding_pays(
            &[flag],
            &names(&["l_returnflag"]),
            &names(&[])
        ));
    }
}
