"""Delete files written by hand onto a pyiceberg table (pyiceberg writes none).

`add_equality_deletes(table, keys)` writes `keys` (an Arrow table whose columns are named as
the table's) as one Parquet equality delete file (columns carrying their Iceberg field ids,
`equality_ids` = those ids); `add_position_deletes(table, positions)` writes one position
delete file (`file_path`, `pos`, sorted, with the spec's reserved field ids) removing the given
row positions of the given data files. Each is added in a delete manifest, with a manifest list
of the current snapshot's manifests plus that one, committed as a `delete` snapshot through
pyiceberg's catalog with the current snapshot as the requirement. Format v2, unpartitioned
tables only.
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestWriterV2,
    write_manifest_list,
)
from pyiceberg.table.snapshots import Operation, Snapshot, Summary
from pyiceberg.table.update import AddSnapshotUpdate, AssertRefSnapshotId, SetSnapshotRefUpdate
from pyiceberg.typedef import Record


class _DeleteManifestWriter(ManifestWriterV2):
    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


def add_equality_deletes(table, keys: pa.Table) -> int:
    """Commits one equality delete file; returns the new snapshot id."""
    assert table.metadata.format_version == 2 and table.spec().is_unpartitioned()
    schema = table.schema()
    ids = [schema.find_field(name).field_id for name in keys.column_names]
    fields = [
        pa.field(f.name, f.type, True, {b"PARQUET:field_id": str(i).encode()})
        for f, i in zip(keys.schema, ids)
    ]
    keys = keys.cast(pa.schema(fields))
    location = table.location().rstrip("/")
    path = f"{location}/data/eq-deletes-{uuid.uuid4()}.parquet"
    with table.io.new_output(path).create() as out:
        pq.write_table(keys, out)
    size = len(table.io.new_input(path))
    delete = DataFile.from_args(
        content=DataFileContent.EQUALITY_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=keys.num_rows,
        file_size_in_bytes=size,
        equality_ids=ids,
    )
    return _commit(table, delete, {"added-equality-deletes": str(keys.num_rows)})


def add_position_deletes(table, positions: dict[str, list[int]]) -> int:
    """Commits one position delete file removing `positions[path]` of each data file `path`;
    returns the new snapshot id."""
    assert table.metadata.format_version == 2 and table.spec().is_unpartitioned()
    rows = sorted((path, pos) for path, ps in positions.items() for pos in ps)
    schema = pa.schema([
        pa.field("file_path", pa.string(), False, {b"PARQUET:field_id": b"2147483546"}),
        pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": b"2147483545"}),
    ])
    data = pa.table([pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int64())],
                    schema=schema)
    location = table.location().rstrip("/")
    path = f"{location}/data/pos-deletes-{uuid.uuid4()}.parquet"
    with table.io.new_output(path).create() as out:
        pq.write_table(data, out)
    delete = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=data.num_rows,
        file_size_in_bytes=len(table.io.new_input(path)),
    )
    return _commit(table, delete, {"added-position-deletes": str(data.num_rows)})


def _commit(table, delete, counts: dict[str, str]) -> int:
    """Commits `delete` (a delete file) in a new delete manifest; returns the snapshot id."""
    schema = table.schema()
    location = table.location().rstrip("/")
    delete.spec_id = table.spec().spec_id
    metadata = table.metadata
    parent = table.current_snapshot()
    snapshot_id = metadata.new_snapshot_id()
    sequence_number = metadata.next_sequence_number()
    manifest_path = f"{location}/metadata/{uuid.uuid4()}-deletes-m0.avro"
    with _DeleteManifestWriter(table.spec(), schema, table.io.new_output(manifest_path), snapshot_id,
                               "deflate") as writer:
        writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED, snapshot_id=snapshot_id,
                                           data_file=delete))
    manifest = writer.to_manifest_file()
    list_path = f"{location}/metadata/snap-{snapshot_id}-0-{uuid.uuid4()}.avro"
    with write_manifest_list(2, table.io.new_output(list_path), snapshot_id, parent.snapshot_id,
                             sequence_number, "deflate") as lister:
        lister.add_manifests(parent.manifests(table.io) + [manifest])
    snapshot = Snapshot(
        snapshot_id=snapshot_id,
        parent_snapshot_id=parent.snapshot_id,
        sequence_number=sequence_number,
        timestamp_ms=int(time.time() * 1000),
        manifest_list=list_path,
        summary=Summary(Operation.DELETE, **{"added-delete-files": "1", **counts}),
        schema_id=schema.schema_id,
    )
    tx = table.transaction()
    tx._apply(
        (AddSnapshotUpdate(snapshot=snapshot),
         SetSnapshotRefUpdate(ref_name="main", type="branch", snapshot_id=snapshot_id)),
        (AssertRefSnapshotId(ref="main", snapshot_id=parent.snapshot_id),),
    )
    tx.commit_transaction()
    return snapshot_id
