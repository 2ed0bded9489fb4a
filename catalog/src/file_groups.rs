//! How a scan's files become the partitions (tasks) of `IcebergScanExec`: split by rows while
//! there are fewer pieces than tasks, then spread over the tasks by bytes — or, where a table is
//! partitioned by a column's value, spread whole partitions so that each value is one task's.

use std::collections::HashMap;
use std::hash::Hash;

use floe_proto::{DataFileTask, FileGroup};
use iceberg::scan::FileScanTask;
use iceberg::spec::{Literal, PartitionSpec, Transform};

/// A piece of a file by rows is worth a task of its own from this many bytes (pro rata).
const MIN_PIECE_BYTES: u64 = 8 * 1024 * 1024;

/// Splits files by rows while there are fewer pieces than `target` tasks and the largest piece
/// is worth splitting: a table of fewer files than the scan has tasks (a dimension table of one
/// file of one row group, as pyiceberg and Spark write them) is read by several tasks.
/// Each piece is weighed by its share of the file's bytes.
pub fn split_by_rows(files: Vec<DataFileTask>, target: usize) -> Vec<(u64, DataFileTask)> {
    let mut pieces: Vec<(u64, DataFileTask)> = files
        .into_iter()
        .map(|f| (f.file_size_in_bytes, f))
        .collect();
    while pieces.len() < target {
        let whole_by_bytes =
            |f: &DataFileTask| f.start == 0 && (f.length == 0 || f.length == f.file_size_in_bytes);
        let Some(i) = pieces
            .iter()
            .enumerate()
            .filter(|(_, (_, f))| f.record_count >= 2 && whole_by_bytes(f))
            .max_by_key(|(_, (weight, _))| *weight)
            .map(|(i, _)| i)
        else {
            break;
        };
        let (weight, piece) = &mut pieces[i];
        if *weight < 2 * MIN_PIECE_BYTES {
            break;
        }
        let rows = piece.record_count;
        let half = rows / 2;
        let mut second = piece.clone();
        piece.row_count = half;
        piece.record_count = half;
        second.row_offset = piece.row_offset + half;
        second.row_count = rows - half;
        second.record_count = rows - half;
        let second_weight = *weight - *weight / 2;
        *weight /= 2;
        pieces.push((second_weight, second));
    }
    pieces
}

/// Spreads files (largest first) over at most `target` groups, each file to the lightest group.
pub fn balance_by_bytes(files: Vec<(u64, DataFileTask)>, target: usize) -> Vec<FileGroup> {
    let n = target.min(files.len()).max(1);
    spread(files, n)
        .into_iter()
        .map(|(_, files)| FileGroup { files })
        .collect()
}

/// Weighed items spread over `n` groups, heaviest first (in their order among equals), each to
/// the lightest group: each group's weight and items.
fn spread<T>(mut items: Vec<(u64, T)>, n: usize) -> Vec<(u64, Vec<T>)> {
    items.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    let mut groups: Vec<(u64, Vec<T>)> = (0..n.max(1)).map(|_| (0, Vec::new())).collect();
    for (weight, item) in items {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(total, _)| *total)
            .expect("at least one group");
        lightest.0 += weight;
        lightest.1.push(item);
    }
    groups
}

/// The pieces (see [`split_by_rows`]) grouped by the value of an identity partition field of
/// `spec` (the partition spec of every file: the table's only one) that the scan outputs, so
/// that each value is read by one task: the first such field whose values [`balance_keyed`]
/// spreads over as many tasks as spreading the pieces would fill. `field_ids` are the scan's
/// output columns. Returns the groups and the output column they are keyed by.
pub fn keyed_by_identity_partition(
    spec: &PartitionSpec,
    tasks: &[FileScanTask],
    pieces: &[(u64, DataFileTask)],
    field_ids: &[i32],
    target: usize,
) -> Option<(Vec<FileGroup>, usize)> {
    let target = target.min(pieces.len());
    if target < 2 {
        return None;
    }
    for (position, field) in spec.fields().iter().enumerate() {
        if field.transform != Transform::Identity {
            continue;
        }
        let Some(column) = field_ids.iter().position(|id| *id == field.source_id) else {
            continue;
        };
        // The field's value in each file (a partition tuple of the spec's arity).
        let by_path: Option<HashMap<&str, &Option<Literal>>> = tasks
            .iter()
            .map(|t| {
                let values = t.partition.as_ref()?.fields();
                if values.len() != spec.fields().len() {
                    return None;
                }
                Some((t.data_file_path.as_str(), &values[position]))
            })
            .collect();
        let Some(by_path) = by_path else {
            continue;
        };
        let keyed: Option<Vec<_>> = pieces
            .iter()
            .map(|(weight, piece)| {
                let key = by_path.get(piece.path.as_str())?;
                Some(((*key).clone(), *weight, piece.clone()))
            })
            .collect();
        if let Some(groups) = keyed.and_then(|k| balance_keyed(k, target)) {
            return Some((groups, column));
        }
    }
    None
}

/// A keyed grouping may load its heaviest task this much more than spreading single pieces
/// does (in 1/8ths: 9/8 = 12.5 % more) — what a query that does not group by the key pays for
/// the aggregations that do to run without a shuffle.
const KEYED_IMBALANCE_EIGHTHS: u64 = 9;

/// Spreads weighed pieces over `target` groups so that all pieces of one key (an identity
/// partition value) land in the same group, heaviest keys first, each to the lightest group.
/// `None` when there are fewer keys than `target` (a task would be idle) or when whole keys
/// would load the heaviest group more than an eighth beyond spreading single pieces.
pub fn balance_keyed<K: Eq + Hash>(
    pieces: Vec<(K, u64, DataFileTask)>,
    target: usize,
) -> Option<Vec<FileGroup>> {
    let target = target.max(1);
    let singly: Vec<(u64, ())> = pieces.iter().map(|(_, w, _)| (*w, ())).collect();
    let spread_singly = heaviest(&spread(singly, target.min(pieces.len())));
    let mut by_key: HashMap<K, (u64, Vec<DataFileTask>)> = HashMap::new();
    for (key, weight, piece) in pieces {
        let entry = by_key.entry(key).or_default();
        entry.0 += weight;
        entry.1.push(piece);
    }
    if by_key.len() < target {
        return None;
    }
    // In path order among keys of equal weight, so that a plan is the same every time.
    let mut keys: Vec<(u64, Vec<DataFileTask>)> = by_key.into_values().collect();
    keys.sort_by(|a, b| a.1[0].path.cmp(&b.1[0].path));
    let groups = spread(keys, target);
    (heaviest(&groups) * 8 <= spread_singly * KEYED_IMBALANCE_EIGHTHS).then(|| {
        groups
            .into_iter()
            .map(|(_, keys)| FileGroup {
                files: keys.into_iter().flatten().collect(),
            })
            .collect()
    })
}

fn heaviest<T>(groups: &[(u64, Vec<T>)]) -> u64 {
    groups.iter().map(|(weight, _)| *weight).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> (u64, DataFileTask) {
        (
            size,
            DataFileTask {
                path: format!("f{size}"),
                file_size_in_bytes: size,
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_table_of_fewer_files_than_tasks_is_split_by_rows() {
        const MB: u64 = 1024 * 1024;
        let f = |name: &str, size: u64, rows: u64| DataFileTask {
            path: name.into(),
            file_size_in_bytes: size,
            record_count: rows,
            ..Default::default()
        };
        let pieces = split_by_rows(vec![f("big", 64 * MB, 1001), f("small", 4 * MB, 50)], 4);
        let mut big: Vec<(u64, u64, u64)> = pieces
            .iter()
            .filter(|(_, p)| p.path == "big")
            .map(|(w, p)| (p.row_offset, p.row_count, *w))
            .collect();
        big.sort();
        // Three pieces of the big file cover its 1001 rows exactly once; the small one is whole.
        assert_eq!(
            big,
            vec![(0, 500, 32 * MB), (500, 250, 16 * MB), (750, 251, 16 * MB)]
        );
        assert!(pieces
            .iter()
            .any(|(_, p)| p.path == "small" && p.row_count == 0 && p.record_count == 50));
        // Pieces below the minimum are not split further; files split by bytes never are.
        assert_eq!(split_by_rows(vec![f("tiny", 12 * MB, 1000)], 8).len(), 1);
        let mut ranged = f("ranged", 64 * MB, 1000);
        ranged.length = 32 * MB;
        assert_eq!(split_by_rows(vec![ranged], 8).len(), 1);
    }

    #[test]
    fn groups_balance_bytes_not_file_counts() {
        let groups = balance_by_bytes(vec![file(100), file(60), file(30), file(20), file(10)], 2);
        let sums: Vec<u64> = groups
            .iter()
            .map(|g| g.files.iter().map(|f| f.file_size_in_bytes).sum())
            .collect();
        assert_eq!(sums.iter().sum::<u64>(), 220);
        assert_eq!(sums, vec![110, 110]);
    }

    #[test]
    fn keyed_groups_hold_each_key_whole() {
        // Four keys, two files each, of unequal sizes: every key's files in one group.
        let files: Vec<(u32, u64, DataFileTask)> = [
            (1, 100),
            (1, 20),
            (2, 60),
            (2, 50),
            (3, 40),
            (3, 45),
            (4, 70),
            (4, 30),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (key, size))| {
            let (_, mut f) = file(size);
            f.path = format!("k{key}-{i}");
            (key, size, f)
        })
        .collect();
        let groups = balance_keyed(files, 2).expect("balanced enough");
        assert_eq!(groups.len(), 2);
        let keys_of = |g: &FileGroup| -> Vec<String> {
            let mut k: Vec<String> = g.files.iter().map(|f| f.path[..2].to_string()).collect();
            k.sort();
            k.dedup();
            k
        };
        let (a, b) = (keys_of(&groups[0]), keys_of(&groups[1]));
        assert!(
            a.iter().all(|k| !b.contains(k)),
            "{a:?} and {b:?} share a key"
        );
        let sums: Vec<u64> = groups
            .iter()
            .map(|g| g.files.iter().map(|f| f.file_size_in_bytes).sum())
            .collect();
        assert_eq!(sums.iter().sum::<u64>(), 415);
        assert!(sums.iter().all(|s| *s <= 215), "{sums:?}");
    }

    #[test]
    fn keyed_groups_refused_when_too_few_keys_or_too_uneven() {
        let keyed = |pairs: &[(u32, u64)]| -> Vec<(u32, u64, DataFileTask)> {
            pairs.iter().map(|(k, s)| (*k, *s, file(*s).1)).collect()
        };
        // Two keys cannot feed three tasks.
        assert!(balance_keyed(keyed(&[(1, 10), (1, 10), (2, 10)]), 3).is_none());
        // One key holds most of the bytes in many files: spreading files does far better.
        assert!(balance_keyed(
            keyed(&[(1, 50), (1, 50), (1, 50), (1, 50), (2, 10), (3, 10)]),
            2
        )
        .is_none());
        // Even keys are taken; so are uneven ones that spreading single files cannot better
        // (three files of three days over two tasks: two files in one task either way).
        assert!(balance_keyed(keyed(&[(1, 50), (2, 50), (3, 50), (4, 50)]), 2).is_some());
        assert!(balance_keyed(keyed(&[(1, 50), (2, 50), (3, 50)]), 2).is_some());
        // Two files of one day and two small ones of two others: keyed 100 against 20,
        // spread 60 against 60.
        assert!(balance_keyed(keyed(&[(1, 50), (1, 50), (2, 10), (3, 10)]), 2).is_none());
    }

    #[test]
    fn never_more_groups_than_files() {
        assert_eq!(balance_by_bytes(vec![file(1)], 8).len(), 1);
        assert_eq!(balance_by_bytes(vec![], 8).len(), 1);
    }
}
