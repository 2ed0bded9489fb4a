//! Reading merge-on-read deletes on the executor that reads each data file (the coordinator
//! plans them: `floe_catalog::deletes`).
//!
//! * A Parquet position delete file's rows for one data file become a set of deleted positions
//!   ([`PositionDeleteFile`], then [`DeletionVector`]), dropped from the batches with a mask or
//!   a row selection (iceberg's reader would turn them into a selection of short runs, far
//!   slower).
//! * Equality deletes are matched on their columns ([`super::equality_deletes`]), NULL matching
//!   NULL.
//! * A deletion vector (v3: a `deletion-vector-v1` blob in a Puffin file, which iceberg 0.10.1
//!   does not read) is read at its offset, its CRC and cardinality checked
//!   ([`DeletionVector`]). A vector holds every deleted position of its file (writers merge
//!   older position deletes into it), so a file with a vector ignores any Parquet position
//!   delete file.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Scalar, StringArray};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Int64Type};

use datafusion::common::{DataFusionError, Result};
use floe_proto::DeleteFileRef;
use iceberg::io::FileIO;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ProjectionMask, PARQUET_FIELD_ID_META_KEY};
use roaring::RoaringTreemap;

use crate::error::FloeError;

/// `DeleteFileRef.content` of a Parquet position delete file.
pub const POSITION_DELETES: i32 = 1;
/// `DeleteFileRef.content` of an equality delete file.
pub const EQUALITY_DELETES: i32 = 2;
/// `DeleteFileRef.content` of a deletion vector (a blob of a Puffin file).
pub const DELETION_VECTOR: i32 = 3;

/// The magic bytes that open a `deletion-vector-v1` blob's vector.
const DV_MAGIC: [u8; 4] = [0xD1, 0xD3, 0x39, 0x64];
/// The largest deletion vector blob Floe reads (a vector of every row of a billion-row file
/// is far smaller).
pub const MAX_DV_BYTES: u64 = 512 << 20;

fn external(e: FloeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The field id of a position delete file's `file_path` column (reserved by the spec).
pub const DELETE_FILE_PATH_ID: i32 = 2147483546;
/// The field id of a position delete file's `pos` column.
const DELETE_POS_ID: i32 = 2147483545;

/// The rows of one Parquet position delete file: which data file, which position.
#[derive(Debug)]
pub struct PositionDeleteFile {
    /// The `file_path` column, as UTF-8; `None` when every row is for one data file (known
    /// from the manifest, so the column is not read).
    paths: Option<StringArray>,
    /// The `pos` column.
    positions: arrow::array::Int64Array,
}

impl PositionDeleteFile {
    /// Reads the position delete file `d` of `table`.
    pub async fn load(file_io: &FileIO, table: &str, d: &DeleteFileRef) -> Result<Arc<Self>> {
        let what = "position delete file";
        let ids: &[i32] = if d.single_data_file {
            &[DELETE_POS_ID]
        } else {
            &[DELETE_POS_ID, DELETE_FILE_PATH_ID]
        };
        let Some(columns) = read_delete_columns(file_io, table, &d.path, ids, what).await? else {
            return Ok(Arc::new(Self {
                paths: None,
                positions: arrow::array::Int64Array::from(Vec::<i64>::new()),
            }));
        };
        let bad = |why: String| {
            external(FloeError::DataLoss(format!(
                "table {table}: {what} {} is unreadable: {why}",
                d.path
            )))
        };
        let positions = cast(&columns[0], &DataType::Int64).map_err(|e| bad(e.to_string()))?;
        let positions = positions.as_primitive::<Int64Type>().clone();
        let paths = match columns.get(1) {
            Some(paths) => {
                let paths = cast(paths, &DataType::Utf8).map_err(|e| bad(e.to_string()))?;
                Some(paths.as_string::<i32>().clone())
            }
            None => None,
        };
        if positions.null_count() > 0 || paths.as_ref().is_some_and(|p| p.null_count() > 0) {
            return Err(bad("a row without a file path or position".into()));
        }
        Ok(Arc::new(Self { paths, positions }))
    }

    /// Adds the positions this file deletes from `data_file` to `out` (a file read for one
    /// data file holds only that file's).
    pub fn add_positions(&self, data_file: &str, out: &mut RoaringTreemap) -> Result<()> {
        let positions = match &self.paths {
            None => self.positions.clone(),
            Some(paths) => {
                let wanted = Scalar::new(StringArray::from(vec![data_file]));
                let rows = arrow::compute::kernels::cmp::eq(paths, &wanted)?;
                if rows.true_count() == rows.len() {
                    self.positions.clone()
                } else {
                    arrow::compute::filter(&self.positions, &rows)?
                        .as_primitive::<Int64Type>()
                        .clone()
                }
            }
        };
        if positions.values().iter().any(|p| *p < 0) {
            return Err(external(FloeError::DataLoss(format!(
                "a position delete for {data_file} has a negative position"
            ))));
        }
        out.extend(positions.values().iter().map(|p| *p as u64));
        Ok(())
    }
}

/// The columns with field ids `ids` of a delete file (`what`: the kind, for errors), in that
/// order; `None` when it holds no rows.
pub(crate) async fn read_delete_columns(
    file_io: &FileIO,
    table: &str,
    path: &str,
    ids: &[i32],
    what: &str,
) -> Result<Option<Vec<ArrayRef>>> {
    let missing = |e: iceberg::Error| {
        external(FloeError::from_iceberg(
            &format!("table {table}: reading {what} {path}"),
            e,
        ))
    };
    let corrupt = |why: &str| {
        external(FloeError::DataLoss(format!(
            "table {table}: {what} {path} is unreadable: {why}"
        )))
    };
    let bytes = file_io
        .new_input(path)
        .map_err(missing)?
        .read()
        .await
        .map_err(missing)?;
    let bad = |e: parquet::errors::ParquetError| corrupt(&e.to_string());
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(bad)?;
    // Top-level columns by field id (delete columns are primitive, so one leaf each).
    let fields = builder.parquet_schema().root_schema().get_fields().to_vec();
    let mut roots = Vec::new();
    for id in ids {
        let index = fields
            .iter()
            .position(|f| f.get_basic_info().has_id() && f.get_basic_info().id() == *id)
            .ok_or_else(|| corrupt(&format!("it has no column with field id {id}")))?;
        roots.push(index);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder.with_projection(mask).build().map_err(bad)?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| corrupt(&e.to_string()))?;
    let Some(schema) = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.schema())
    else {
        return Ok(None);
    };
    // The projected columns come in file order: find each id's by its field-id metadata.
    ids.iter()
        .map(|id| {
            let index = schema
                .fields()
                .iter()
                .position(|f| f.metadata().get(PARQUET_FIELD_ID_META_KEY) == Some(&id.to_string()))
                .ok_or_else(|| corrupt(&format!("no column with field id {id}")))?;
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(index).as_ref()).collect();
            Ok(concat(&parts)?)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A data file's deleted row positions: its deletion vector, or what its position delete
/// files say.
#[derive(Debug, Clone)]
pub struct DeletionVector {
    positions: RoaringTreemap,
}

impl DeletionVector {
    /// Reads and checks the vector `dv` names for `data_file` of `table`: the blob's length,
    /// magic and CRC, and that it deletes as many rows as its manifest entry says.
    pub async fn load(
        file_io: &FileIO,
        table: &str,
        data_file: &str,
        dv: &DeleteFileRef,
    ) -> Result<Self> {
        let where_ = || {
            format!(
                "deletion vector for {data_file} in {} (bytes {}..{})",
                dv.path,
                dv.content_offset,
                dv.content_offset + dv.content_size_in_bytes
            )
        };
        let missing = |e: iceberg::Error| {
            external(FloeError::from_iceberg(
                &format!("table {table}: reading the {}", where_()),
                e,
            ))
        };
        if dv.content_size_in_bytes > MAX_DV_BYTES {
            return Err(corrupt(table, &where_(), "larger than Floe reads"));
        }
        let input = file_io.new_input(&dv.path).map_err(missing)?;
        let bytes = input
            .reader()
            .await
            .map_err(missing)?
            .read(dv.content_offset..dv.content_offset + dv.content_size_in_bytes)
            .await
            .map_err(missing)?;
        let positions = decode_blob(&bytes).map_err(|why| corrupt(table, &where_(), &why))?;
        if positions.len() != dv.record_count {
            return Err(corrupt(
                table,
                &where_(),
                &format!(
                    "it deletes {} rows but its manifest entry says {}",
                    positions.len(),
                    dv.record_count
                ),
            ));
        }
        Ok(DeletionVector { positions })
    }

    /// The positions position delete files delete.
    pub fn from_positions(positions: RoaringTreemap) -> Self {
        DeletionVector { positions }
    }

    /// The deleted positions.
    pub fn positions(&self) -> &RoaringTreemap {
        &self.positions
    }

    /// Whether row `position` of the file is deleted.
    pub fn contains(&self, position: u64) -> bool {
        self.positions.contains(position)
    }

    /// The deleted positions, in ascending order.
    pub fn into_positions(self) -> impl Iterator<Item = u64> + Send {
        self.positions.into_iter()
    }

    /// How many rows it deletes.
    pub fn len(&self) -> u64 {
        self.positions.len()
    }

    /// Whether it deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

fn corrupt(table: &str, what: &str, why: &str) -> DataFusionError {
    external(FloeError::DataLoss(format!(
        "table {table}: the {what} is corrupt: {why}"
    )))
}

/// Decodes a `deletion-vector-v1` blob: a 4-byte big-endian length of the magic and vector,
/// the magic `D1 D3 39 64`, the vector (a portable 64-bit Roaring bitmap), and a 4-byte
/// big-endian CRC-32 of the magic and vector.
pub fn decode_blob(blob: &[u8]) -> std::result::Result<RoaringTreemap, String> {
    if blob.len() < 12 {
        return Err(format!("{} bytes is too short for a blob", blob.len()));
    }
    let declared = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if declared != blob.len() - 8 {
        return Err(format!(
            "its length field says {declared} bytes, the blob holds {}",
            blob.len() - 8
        ));
    }
    let body = &blob[4..blob.len() - 4];
    if body[..4] != DV_MAGIC {
        return Err("the magic bytes are wrong".into());
    }
    let crc = u32::from_be_bytes([
        blob[blob.len() - 4],
        blob[blob.len() - 3],
        blob[blob.len() - 2],
        blob[blob.len() - 1],
    ]);
    if crc32fast::hash(body) != crc {
        return Err("its CRC does not match".into());
    }
    RoaringTreemap::deserialize_from(&body[4..]).map_err(|e| format!("the bitmap: {e}"))
}

/// Encodes positions as a `deletion-vector-v1` blob (for tests and fuzzing).
pub fn encode_blob(positions: &RoaringTreemap) -> Vec<u8> {
    let mut body = DV_MAGIC.to_vec();
    positions
        .serialize_into(&mut body)
        .expect("writing to a Vec cannot fail");
    let mut blob = (body.len() as u32).to_be_bytes().to_vec();
    blob.extend_from_slice(&body);
    blob.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    blob
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_damage_is_caught() {
        let positions: RoaringTreemap = [0u64, 5, 6, 7, 1 << 33, 10_000_000].into_iter().collect();
        let blob = encode_blob(&positions);
        assert_eq!(decode_blob(&blob).expect("valid"), positions);
        let mut flipped = blob.clone();
        let at = flipped.len() - 6;
        flipped[at] ^= 0x40;
        assert!(decode_blob(&flipped).expect_err("bad crc").contains("CRC"));
        let mut magic = blob.clone();
        magic[4] = 0;
        assert!(decode_blob(&magic)
            .expect_err("bad magic")
            .contains("magic"));
        assert!(decode_blob(&blob[..blob.len() - 1])
            .expect_err("short")
            .contains("length"));
        assert!(decode_blob(&[0; 5]).is_err());
    }

    #[test]
    fn a_partition_scoped_file_gives_each_data_file_its_own_positions() {
        let file = PositionDeleteFile {
            paths: Some(StringArray::from(vec!["a", "a", "b", "a", "c"])),
            positions: arrow::array::Int64Array::from(vec![0, 7, 7, 1 << 40, 2]),
        };
        let mut a = RoaringTreemap::new();
        file.add_positions("a", &mut a).expect("valid");
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 7, 1 << 40]);
        let mut b: RoaringTreemap = [3u64].into_iter().collect();
        file.add_positions("b", &mut b).expect("valid");
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![3, 7]);
        let mut none = RoaringTreemap::new();
        file.add_positions("d", &mut none).expect("valid");
        assert!(none.is_empty());
        let negative = PositionDeleteFile {
            paths: Some(StringArray::from(vec!["a"])),
            positions: arrow::array::Int64Array::from(vec![-1]),
        };
        let err = negative
            .add_positions("a", &mut RoaringTreemap::new())
            .expect_err("negative")
            .to_string();
        assert!(err.contains("negative position"), "{err}");
    }

    fn local_io() -> FileIO {
        iceberg::io::FileIOBuilder::new(std::sync::Arc::new(
            crate::storage::ObjectStoreStorageFactory::default(),
        ))
        .build()
    }

    #[tokio::test]
    async fn a_vector_is_read_at_its_offset_and_its_count_checked() {
        let dir = std::env::temp_dir().join(format!("floe-dv-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let positions: RoaringTreemap = [1u64, 3, 5].into_iter().collect();
        let blob = encode_blob(&positions);
        let mut file = b"PFA1".to_vec();
        file.extend_from_slice(&blob);
        file.extend_from_slice(b"footer");
        let path = dir.join("v.puffin");
        std::fs::write(&path, &file).expect("write");
        let mut dv = DeleteFileRef {
            path: format!("file://{}", path.display()),
            file_size_in_bytes: file.len() as u64,
            content: DELETION_VECTOR,
            partition_spec_id: 0,
            equality_ids: vec![],
            content_offset: 4,
            content_size_in_bytes: blob.len() as u64,
            record_count: 3,
            single_data_file: true,
        };
        let io = local_io();
        let loaded = DeletionVector::load(&io, "t", "data.parquet", &dv)
            .await
            .expect("valid");
        assert!(loaded.contains(3) && !loaded.contains(2));
        assert_eq!(loaded.len(), 3);
        // The manifest entry says another count: an error, not a silent answer.
        dv.record_count = 4;
        let err = DeletionVector::load(&io, "t", "data.parquet", &dv)
            .await
            .expect_err("count disagrees")
            .to_string();
        assert!(
            err.contains("deletes 3 rows but its manifest entry says 4"),
            "{err}"
        );
        assert!(
            err.contains("data.parquet") && err.contains("v.puffin"),
            "{err}"
        );
        // The wrong offset: the blob's length field does not match.
        dv.record_count = 3;
        dv.content_offset = 3;
        assert!(DeletionVector::load(&io, "t", "data.parquet", &dv)
            .await
            .is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
