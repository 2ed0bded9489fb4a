//! What the front door tells JDBC, ODBC and ADBC drivers about the server: the `GetSqlInfo`
//! set, the `GetXdbcTypeInfo` table, the (empty) key answers, and the table-listing filter
//! applied before any table's metadata is loaded.
//!
//! Every value here is a claim a BI tool acts on, so each is either derived from what the
//! engine really does (function lists from the function registry, keywords from the parser)
//! or pinned by an integration test that checks it against a real query
//! (`tests/integration/test_bi_surface.py`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    self as fsql, Nullable, Searchable, SqlInfo, SqlSupportedCaseSensitivity,
    SqlSupportedResultSetConcurrency, SqlSupportedResultSetType, SqlSupportedTransaction,
    SqlSupportsConvert, SqlTransactionIsolationLevel, SupportedSqlGrammar, XdbcDataType,
    XdbcDatetimeSubcode,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

/// The `GetSqlInfo` answers, in the two variants a caller may see: a coordinator started with
/// `--read-only`, and a `reader` user, are told the server is read-only.
pub(crate) struct ServerInfo {
    writable: SqlInfoData,
    read_only: SqlInfoData,
}

/// The server's `GetSqlInfo` data, built once.
pub(crate) static SERVER_INFO: LazyLock<ServerInfo> = LazyLock::new(|| {
    let functions = FunctionLists::from_registry();
    ServerInfo {
        writable: sql_info(false, &functions),
        read_only: sql_info(true, &functions),
    }
});

impl ServerInfo {
    /// The answers for a caller who may (`read_only == false`) or may not change tables.
    pub(crate) fn for_caller(&self, read_only: bool) -> &SqlInfoData {
        if read_only {
            &self.read_only
        } else {
            &self.writable
        }
    }
}

/// The engine's scalar functions, in the JDBC categories, by their documentation section.
struct FunctionLists {
    numeric: Vec<String>,
    string: Vec<String>,
    system: Vec<String>,
    datetime: Vec<String>,
}

impl FunctionLists {
    fn from_registry() -> Self {
        let state = SessionStateBuilder::new().with_default_features().build();
        let mut lists = FunctionLists {
            numeric: vec![],
            string: vec![],
            system: vec![],
            datetime: vec![],
        };
        for (name, udf) in state.scalar_functions() {
            let Some(doc) = udf.documentation() else {
                continue;
            };
            let list = match doc.doc_section.label {
                "Math Functions" => &mut lists.numeric,
                "String Functions" | "Binary String Functions" | "Regular Expression Functions" => {
                    &mut lists.string
                }
                "Time and Date Functions" => &mut lists.datetime,
                "Conditional Functions" | "Other Functions" | "Hashing Functions" => {
                    &mut lists.system
                }
                _ => continue,
            };
            list.push(name.to_uppercase());
        }
        for list in [
            &mut lists.numeric,
            &mut lists.string,
            &mut lists.system,
            &mut lists.datetime,
        ] {
            list.sort();
            list.dedup();
        }
        lists
    }
}

/// A bitmask of the enum values given, as Flight SQL encodes "supported" sets.
fn mask(values: &[i32]) -> i32 {
    values.iter().fold(0, |acc, v| acc | (1 << v))
}

fn sql_info(read_only: bool, functions: &FunctionLists) -> SqlInfoData {
    use SqlInfo::*;
    let mut b = SqlInfoDataBuilder::new();
    // The server.
    b.append(FlightSqlServerName, "Floe");
    b.append(FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    b.append(FlightSqlServerReadOnly, read_only);
    b.append(FlightSqlServerSql, true);
    b.append(FlightSqlServerSubstrait, false);
    b.append(FlightSqlServerSubstraitMinVersion, "");
    b.append(FlightSqlServerSubstraitMaxVersion, "");
    b.append(
        FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(FlightSqlServerCancel, true);
    b.append(FlightSqlServerBulkIngestion, false);
    b.append(FlightSqlServerIngestTransactionsSupported, false);
    // 0: no statement or transaction timeout is imposed on the client's behalf.
    b.append(FlightSqlServerStatementTimeout, 0i32);
    b.append(FlightSqlServerTransactionTimeout, 0i32);

    // DDL: schemas (namespaces) and tables, one fixed catalog.
    b.append(SqlDdlCatalog, false);
    b.append(SqlDdlSchema, !read_only);
    b.append(SqlDdlTable, !read_only);
    // Unquoted identifiers are folded to lower case; quoted ones are kept as written.
    b.append(
        SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlAllTablesAreSelectable, true);
    // Ascending order puts NULLs last and descending first: NULL sorts as the largest value.
    b.append(
        SqlNullOrdering,
        fsql::SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(
        SqlKeywords,
        ALL_KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
    );
    b.append(SqlNumericFunctions, functions.numeric.clone());
    b.append(SqlStringFunctions, functions.string.clone());
    b.append(SqlSystemFunctions, functions.system.clone());
    b.append(SqlDatetimeFunctions, functions.datetime.clone());
    b.append(SqlSearchStringEscape, "\\");
    b.append(SqlExtraNameCharacters, "");
    b.append(SqlSupportsColumnAliasing, true);
    b.append(SqlNullPlusNullIsNull, true);
    b.append(SqlSupportsConvert, convert_matrix());
    b.append(SqlSupportsTableCorrelationNames, true);
    b.append(SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlSupportedGroupBy,
        mask(&[
            fsql::SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            fsql::SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    b.append(SqlSupportsLikeEscapeClause, true);
    b.append(SqlSupportsNonNullableColumns, true);
    b.append(
        SqlSupportedGrammar,
        mask(&[
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    b.append(
        SqlAnsi92SupportedLevel,
        // ANSI92_ENTRY_SQL (0) and ANSI92_INTERMEDIATE_SQL (1); arrow-flight does not export
        // the enum.
        mask(&[0, 1]),
    );
    b.append(SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlOuterJoinsSupportLevel,
        fsql::SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlSchemaTerm, "schema");
    b.append(SqlProcedureTerm, "procedure");
    b.append(SqlCatalogTerm, "catalog");
    b.append(SqlCatalogAtStart, true);
    b.append(SqlSchemasSupportedActions, 0i32);
    b.append(SqlCatalogsSupportedActions, 0i32);
    b.append(SqlSupportedPositionedCommands, 0i32);
    b.append(SqlSelectForUpdateSupported, false);
    b.append(SqlStoredProceduresSupported, false);
    b.append(
        SqlSupportedSubqueries,
        mask(&[
            fsql::SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            fsql::SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            fsql::SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlSupportedUnions,
        mask(&[
            fsql::SqlSupportedUnions::SqlUnion as i32,
            fsql::SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // Lengths and counts: 0 means no limit (statements are bounded by size and depth, and
    // their error says so; see `limits`).
    for limit in [
        SqlMaxBinaryLiteralLength,
        SqlMaxCharLiteralLength,
        SqlMaxColumnNameLength,
        SqlMaxColumnsInGroupBy,
        SqlMaxColumnsInIndex,
        SqlMaxColumnsInOrderBy,
        SqlMaxColumnsInSelect,
        SqlMaxColumnsInTable,
        SqlMaxConnections,
        SqlMaxCursorNameLength,
        SqlMaxIndexLength,
        SqlDbSchemaNameLength,
        SqlMaxProcedureNameLength,
        SqlMaxCatalogNameLength,
        SqlMaxRowSize,
        SqlMaxStatements,
        SqlMaxTableNameLength,
        SqlMaxTablesInSelect,
        SqlMaxUsernameLength,
    ] {
        b.append(limit, 0i64);
    }
    b.append(
        SqlMaxStatementLength,
        crate::limits::MAX_STATEMENT_BYTES as i64,
    );
    b.append(SqlMaxRowSizeIncludesBlobs, true);
    // No transactions: every statement commits on its own.
    b.append(
        SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i32,
    );
    b.append(SqlTransactionsSupported, false);
    b.append(SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlDataDefinitionsInTransactionsIgnored, false);
    b.append(
        SqlSupportedResultSetTypes,
        mask(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    let read_only_concurrency =
        mask(&[SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly as i32]);
    b.append(SqlSupportedConcurrenciesForResultSetUnspecified, 0i32);
    b.append(
        SqlSupportedConcurrenciesForResultSetForwardOnly,
        read_only_concurrency,
    );
    b.append(SqlSupportedConcurrenciesForResultSetScrollSensitive, 0i32);
    b.append(SqlSupportedConcurrenciesForResultSetScrollInsensitive, 0i32);
    b.append(SqlBatchUpdatesSupported, false);
    b.append(SqlSavepointsSupported, false);
    b.append(SqlNamedParametersSupported, false);
    b.append(SqlLocatorsUpdateCopy, false);
    b.append(SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build().expect("the SqlInfo set is valid")
}

/// Which types `CAST` converts between: every pair among the types Floe has, except the
/// interval and binary conversions DataFusion refuses.
fn convert_matrix() -> BTreeMap<i32, Vec<i32>> {
    use SqlSupportsConvert::*;
    let numeric = [
        SqlConvertBigint,
        SqlConvertDecimal,
        SqlConvertFloat,
        SqlConvertInteger,
        SqlConvertNumeric,
        SqlConvertReal,
        SqlConvertSmallint,
        SqlConvertTinyint,
    ];
    let text = [SqlConvertChar, SqlConvertVarchar, SqlConvertLongvarchar];
    let mut map = BTreeMap::new();
    let to_from_numeric: Vec<i32> = numeric
        .iter()
        .chain(text.iter())
        .chain([SqlConvertBit].iter())
        .map(|c| *c as i32)
        .collect();
    for from in numeric.iter().chain([SqlConvertBit].iter()) {
        map.insert(*from as i32, to_from_numeric.clone());
    }
    let from_text: Vec<i32> = numeric
        .iter()
        .chain(text.iter())
        .chain(
            [
                SqlConvertBit,
                SqlConvertDate,
                SqlConvertTime,
                SqlConvertTimestamp,
                SqlConvertBinary,
                SqlConvertVarbinary,
            ]
            .iter(),
        )
        .map(|c| *c as i32)
        .collect();
    for from in text {
        map.insert(from as i32, from_text.clone());
    }
    let dates: Vec<i32> = [SqlConvertDate, SqlConvertTimestamp]
        .iter()
        .chain(text.iter())
        .map(|c| *c as i32)
        .collect();
    map.insert(SqlConvertDate as i32, dates.clone());
    map.insert(SqlConvertTimestamp as i32, dates);
    map.insert(
        SqlConvertTime as i32,
        text.iter()
            .chain([SqlConvertTime].iter())
            .map(|c| *c as i32)
            .collect(),
    );
    let binary: Vec<i32> = [SqlConvertBinary, SqlConvertVarbinary]
        .iter()
        .map(|c| *c as i32)
        .collect();
    map.insert(SqlConvertBinary as i32, binary.clone());
    map.insert(SqlConvertVarbinary as i32, binary);
    map
}

/// One row of the type table.
#[allow(clippy::too_many_arguments)]
fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    literal: Option<(&str, &str)>,
    create_params: Option<&[&str]>,
    searchable: Searchable,
    fixed_prec_scale: bool,
    scale: Option<(i32, i32)>,
    sql_data_type: XdbcDataType,
    datetime_subcode: Option<XdbcDatetimeSubcode>,
    radix: Option<i32>,
) -> XdbcTypeInfo {
    let numeric = radix.is_some();
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size,
        literal_prefix: literal.map(|(p, _)| p.into()),
        literal_suffix: literal.map(|(_, s)| s.into()),
        create_params: create_params.map(|p| p.iter().map(|s| s.to_string()).collect()),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(
            data_type,
            XdbcDataType::XdbcVarchar | XdbcDataType::XdbcChar
        ),
        searchable,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.into()),
        minimum_scale: scale.map(|(min, _)| min),
        maximum_scale: scale.map(|(_, max)| max),
        sql_data_type,
        datetime_subcode,
        num_prec_radix: radix,
        interval_precision: None,
    }
}

/// The SQL types Floe reads, writes and returns, under the names its SQL accepts in `CAST`
/// and `CREATE TABLE` (each is cast in a test and must come back as the Arrow type its
/// results carry).
pub(crate) static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    use Searchable::{Basic, Full};
    use XdbcDataType::*;
    let quoted = Some(("'", "'"));
    let rows = [
        xdbc(
            "BOOLEAN",
            XdbcBit,
            Some(1),
            None,
            None,
            Basic,
            false,
            None,
            XdbcBit,
            None,
            None,
        ),
        xdbc(
            "TINYINT",
            XdbcTinyint,
            Some(3),
            None,
            None,
            Basic,
            false,
            Some((0, 0)),
            XdbcTinyint,
            None,
            Some(10),
        ),
        xdbc(
            "SMALLINT",
            XdbcSmallint,
            Some(5),
            None,
            None,
            Basic,
            false,
            Some((0, 0)),
            XdbcSmallint,
            None,
            Some(10),
        ),
        xdbc(
            "INTEGER",
            XdbcInteger,
            Some(10),
            None,
            None,
            Basic,
            false,
            Some((0, 0)),
            XdbcInteger,
            None,
            Some(10),
        ),
        xdbc(
            "BIGINT",
            XdbcBigint,
            Some(19),
            None,
            None,
            Basic,
            false,
            Some((0, 0)),
            XdbcBigint,
            None,
            Some(10),
        ),
        xdbc(
            "REAL",
            XdbcReal,
            Some(24),
            None,
            None,
            Basic,
            false,
            None,
            XdbcReal,
            None,
            Some(2),
        ),
        xdbc(
            "DOUBLE",
            XdbcDouble,
            Some(53),
            None,
            None,
            Basic,
            false,
            None,
            XdbcDouble,
            None,
            Some(2),
        ),
        xdbc(
            "DECIMAL",
            XdbcDecimal,
            Some(38),
            None,
            Some(&["precision", "scale"]),
            Basic,
            true,
            Some((0, 38)),
            XdbcDecimal,
            None,
            Some(10),
        ),
        xdbc(
            "VARCHAR",
            XdbcVarchar,
            None,
            quoted,
            None,
            Full,
            false,
            None,
            XdbcVarchar,
            None,
            None,
        ),
        // DataFusion's name for a binary column (it does not parse VARBINARY).
        xdbc(
            "BYTEA",
            XdbcVarbinary,
            None,
            Some(("X'", "'")),
            None,
            Basic,
            false,
            None,
            XdbcVarbinary,
            None,
            None,
        ),
        xdbc(
            "DATE",
            XdbcDate,
            Some(10),
            Some(("DATE '", "'")),
            None,
            Basic,
            false,
            None,
            XdbcDatetime,
            // DATE's subcode shares the value 1 with YEAR in the Flight SQL enum.
            Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            None,
        ),
        xdbc(
            "TIME",
            XdbcTime,
            Some(15),
            Some(("TIME '", "'")),
            None,
            Basic,
            false,
            Some((0, 6)),
            XdbcDatetime,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
            None,
        ),
        xdbc(
            "TIMESTAMP",
            XdbcTimestamp,
            Some(26),
            Some(("TIMESTAMP '", "'")),
            None,
            Basic,
            false,
            Some((0, 6)),
            XdbcDatetime,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            None,
        ),
        xdbc(
            "TIMESTAMP WITH TIME ZONE",
            XdbcTimestamp,
            Some(32),
            Some(("TIMESTAMP '", "'")),
            None,
            Basic,
            false,
            Some((0, 6)),
            XdbcDatetime,
            Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone),
            None,
        ),
    ];
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for row in rows {
        builder.append(row);
    }
    builder.build().expect("the type table is valid")
});

/// The schema of `GetPrimaryKeys`.
pub(crate) static PRIMARY_KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
});

/// The schema of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`.
pub(crate) static FOREIGN_KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
});

/// Whether `value` matches a JDBC search pattern: `%` any run of characters, `_` any one
/// character, `\` escapes the next character.
pub(crate) fn like(pattern: &str, value: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = vec![];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let value: Vec<char> = value.chars().collect();
    // matches[j]: tokens so far match value[..j] (a linear-space dynamic program: no
    // backtracking, so a hostile pattern costs at most pattern × value steps).
    let mut matches = vec![false; value.len() + 1];
    matches[0] = true;
    for token in tokens {
        let mut next = vec![false; value.len() + 1];
        match token {
            Token::Any => {
                let mut reached = false;
                for j in 0..=value.len() {
                    reached |= matches[j];
                    next[j] = reached;
                }
            }
            Token::One => {
                next[1..].copy_from_slice(&matches[..value.len()]);
            }
            Token::Char(c) => {
                for j in 1..=value.len() {
                    next[j] = matches[j - 1] && value[j - 1] == c;
                }
            }
        }
        matches = next;
    }
    matches[value.len()]
}

/// Whether an optional pattern admits `value` (no pattern admits everything).
pub(crate) fn admits(pattern: Option<&str>, value: &str) -> bool {
    pattern.is_none_or(|p| like(p, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("%", ""));
        assert!(like("%", "orders"));
        assert!(like("ord%", "orders"));
        assert!(!like("ord%", "lineitem"));
        assert!(like("_rders", "orders"));
        assert!(!like("_rders", "oorders"));
        assert!(like("%item", "lineitem"));
        assert!(like("l%e%m", "lineitem"));
        assert!(!like("l%e%x", "lineitem"));
        assert!(like("a\\_b", "a_b"));
        assert!(!like("a\\_b", "axb"));
        assert!(like("a\\%", "a%"));
        assert!(!like("a\\%", "ab"));
        assert!(like("tpch", "tpch"));
        assert!(!like("tpch", "TPCH"));
        // No exponential backtracking on a hostile pattern.
        let long = "a".repeat(2000);
        assert!(!like(
            &"%a".repeat(500).to_string().replace("%a", "%a%b"),
            &long
        ));
    }

    #[test]
    fn every_info_id_a_jdbc_driver_reads_is_answered() {
        let ids: Vec<u32> = (0..=11).chain(100..=101).chain(500..=576).collect();
        for read_only in [false, true] {
            let data = SERVER_INFO.for_caller(read_only);
            let batch = data.record_batch(ids.clone()).expect("answered");
            assert_eq!(batch.num_rows(), ids.len(), "read_only={read_only}");
        }
    }

    #[test]
    fn function_lists_come_from_the_registry() {
        let lists = FunctionLists::from_registry();
        assert!(lists.numeric.contains(&"ABS".to_string()));
        assert!(lists.string.contains(&"UPPER".to_string()));
        assert!(lists.datetime.contains(&"DATE_TRUNC".to_string()));
        assert!(lists.system.contains(&"COALESCE".to_string()));
    }
}
