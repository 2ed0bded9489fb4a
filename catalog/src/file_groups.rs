//! How a scan's files become the partitions (tasks) of `IcebergScanExec`: split by rows while
//! there are fewer pieces than tasks, then spread over the tasks by bytes.

use floe_proto::{DataFileTask, FileGroup};

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
pub fn balance_by_bytes(mut files: Vec<(u64, DataFileTask)>, target: usize) -> Vec<FileGroup> {
    files.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    let n = target.min(files.len()).max(1);
    let mut groups: Vec<(u64, FileGroup)> = (0..n).map(|_| (0, FileGroup::default())).collect();
    for (weight, file) in files {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += weight;
        lightest.1.files.push(file);
    }
    groups.into_iter().map(|(_, g)| g).collect()
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
    fn never_more_groups_than_files() {
        assert_eq!(balance_by_bytes(vec![file(1)], 8).len(), 1);
        assert_eq!(balance_by_bytes(vec![], 8).len(), 1);
    }
}
