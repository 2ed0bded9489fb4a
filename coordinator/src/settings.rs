//! A connection's settings: `USE schema`, `SET TIME ZONE`, `SET memory_limit`,
//! `SET target_file_size`, and the same through Flight SQL's `SetSessionOptions`,
//! `GetSessionOptions` and `CloseSession` actions.
//!
//! The coordinator keeps no table of sessions: the settings travel in the caller's signed
//! bearer token. A statement or action that changes them leaves the new settings in the
//! request's [`SettingsSlot`]; the authentication layer then signs a token with them and
//! returns it in the response's `authorization` header, which drivers (ADBC, JDBC) send on
//! their later calls. A token cannot be altered, so a client cannot give itself settings the
//! server would have refused; every value is checked again when it is used.

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement as SqlStatement, Use, Value};

use crate::error::CoordinatorError;

/// The settings a client may change, each `None` until it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The schema (namespace) unqualified table names resolve in; `default` when unset.
    pub schema: Option<String>,
    /// The session time zone (`+02:00`, `Europe/Berlin`); UTC when unset.
    pub time_zone: Option<String>,
    /// A memory limit for each of the connection's queries, in bytes: at most the operator's
    /// per-query limit.
    pub memory_limit: Option<u64>,
    /// The size written data files aim for, in bytes (overrides the table's
    /// `write.target-file-size-bytes`).
    pub target_file_size: Option<u64>,
}

/// The setting names, as `SET` and `SetSessionOptions` take them.
pub const SCHEMA: &str = "schema";
/// The catalog option ADBC sends with `adbc.connection.catalog` (only Floe's one catalog).
pub const CATALOG: &str = "catalog";
pub const TIME_ZONE: &str = "time_zone";
pub const MEMORY_LIMIT: &str = "memory_limit";
pub const TARGET_FILE_SIZE: &str = "target_file_size";

/// The smallest and largest target file size a session may ask for.
const MIN_TARGET_FILE_SIZE: u64 = 1 << 20;
const MAX_TARGET_FILE_SIZE: u64 = 4 << 30;
/// The smallest memory limit a session may ask for (below it no query runs).
const MIN_MEMORY_LIMIT: u64 = 16 << 20;

impl Settings {
    /// Sets (`Some`) or clears (`None`) option `name`, checking its value. `max_memory` is the
    /// operator's per-query limit, which a session may lower but not raise.
    pub fn set(
        &mut self,
        name: &str,
        value: Option<&str>,
        max_memory: u64,
    ) -> Result<(), CoordinatorError> {
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            SCHEMA | "search_path" => {
                self.schema = match value {
                    None => None,
                    Some(v) if v.trim().is_empty() => {
                        return Err(CoordinatorError::InvalidArgument(
                            "USE: the schema name is empty".into(),
                        ));
                    }
                    Some(v) => Some(v.trim().to_string()),
                }
            }
            CATALOG => {
                if let Some(v) = value {
                    if v != floe_catalog::CATALOG_NAME {
                        return Err(CoordinatorError::NotFound(format!(
                            "catalog '{v}' not found: Floe serves one catalog, '{}'",
                            floe_catalog::CATALOG_NAME
                        )));
                    }
                }
            }
            TIME_ZONE | "timezone" => {
                self.time_zone = match value {
                    None => None,
                    Some(v) => Some(check_time_zone(v)?),
                }
            }
            MEMORY_LIMIT => {
                self.memory_limit = match value {
                    None => None,
                    Some(v) => {
                        let bytes = parse_size(v).map_err(|e| {
                            CoordinatorError::InvalidArgument(format!("SET {MEMORY_LIMIT}: {e}"))
                        })?;
                        if bytes > max_memory {
                            return Err(CoordinatorError::PermissionDenied(format!(
                                "SET {MEMORY_LIMIT} = {v}: above the operator's per-query limit \
                                 of {max_memory} bytes; a session may only lower it"
                            )));
                        }
                        if bytes < MIN_MEMORY_LIMIT {
                            return Err(CoordinatorError::InvalidArgument(format!(
                                "SET {MEMORY_LIMIT} = {v}: below the smallest limit, \
                                 {MIN_MEMORY_LIMIT} bytes"
                            )));
                        }
                        Some(bytes)
                    }
                }
            }
            TARGET_FILE_SIZE => {
                self.target_file_size = match value {
                    None => None,
                    Some(v) => {
                        let bytes = parse_size(v).map_err(|e| {
                            CoordinatorError::InvalidArgument(format!(
                                "SET {TARGET_FILE_SIZE}: {e}"
                            ))
                        })?;
                        if !(MIN_TARGET_FILE_SIZE..=MAX_TARGET_FILE_SIZE).contains(&bytes) {
                            return Err(CoordinatorError::InvalidArgument(format!(
                                "SET {TARGET_FILE_SIZE} = {v}: must be between \
                                 {MIN_TARGET_FILE_SIZE} and {MAX_TARGET_FILE_SIZE} bytes"
                            )));
                        }
                        Some(bytes)
                    }
                }
            }
            other => {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "unknown setting '{other}' is not supported: a session may set {SCHEMA} \
                     (USE), {TIME_ZONE}, {MEMORY_LIMIT} and {TARGET_FILE_SIZE}"
                )));
            }
        }
        Ok(())
    }

    /// The options as `GetSessionOptions` reports them (set ones only).
    pub fn options(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![];
        if let Some(v) = &self.schema {
            out.push((SCHEMA, v.clone()));
        }
        if let Some(v) = &self.time_zone {
            out.push((TIME_ZONE, v.clone()));
        }
        if let Some(v) = self.memory_limit {
            out.push((MEMORY_LIMIT, v.to_string()));
        }
        if let Some(v) = self.target_file_size {
            out.push((TARGET_FILE_SIZE, v.to_string()));
        }
        out
    }

    /// The settings as one line of token claims: `key=base64(value)` pairs joined by `,`.
    pub fn encode(&self) -> String {
        self.options()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", URL_SAFE_NO_PAD.encode(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The settings from [`Settings::encode`]'s line (already authenticated by the token's
    /// MAC; values are checked again when used).
    pub fn decode(line: &str) -> Option<Settings> {
        let mut settings = Settings::default();
        for pair in line.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            let v = String::from_utf8(URL_SAFE_NO_PAD.decode(v).ok()?).ok()?;
            match k {
                SCHEMA => settings.schema = Some(v),
                TIME_ZONE => settings.time_zone = Some(v),
                MEMORY_LIMIT => settings.memory_limit = Some(v.parse().ok()?),
                TARGET_FILE_SIZE => settings.target_file_size = Some(v.parse().ok()?),
                _ => return None,
            }
        }
        Some(settings)
    }
}

/// A statement that changes settings: `USE s`, `SET TIME ZONE …`, `SET name = value`,
/// `SET name TO DEFAULT`, `RESET name`. `None` when the statement is something else.
pub fn setting_of(
    statement: &SqlStatement,
) -> Option<Result<(String, Option<String>), CoordinatorError>> {
    match statement {
        SqlStatement::Use(target) => Some(match target {
            Use::Schema(name) | Use::Database(name) | Use::Object(name) => {
                Ok((SCHEMA.into(), Some(unquoted(&name.to_string()))))
            }
            Use::Catalog(name) => Ok((CATALOG.into(), Some(unquoted(&name.to_string())))),
            Use::Default => Ok((SCHEMA.into(), None)),
            other => Err(CoordinatorError::InvalidArgument(format!(
                "{other}: Floe's sessions have a schema only (USE schema)"
            ))),
        }),
        SqlStatement::Set(set) => Some(match set {
            Set::SetTimeZone { value, .. } => literal(value).map(|v| (TIME_ZONE.into(), v)),
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_ascii_lowercase();
                match values.as_slice() {
                    [value] => literal(value).map(|v| (name, v)),
                    _ => Err(CoordinatorError::InvalidArgument(format!(
                        "SET {name}: give one value"
                    ))),
                }
            }
            other => Err(CoordinatorError::InvalidArgument(format!(
                "{other}: not a setting Floe keeps (SET {TIME_ZONE}, {MEMORY_LIMIT}, \
                 {TARGET_FILE_SIZE}, or USE schema)"
            ))),
        }),
        _ => None,
    }
}

fn unquoted(name: &str) -> String {
    name.trim_matches('"').to_string()
}

/// A SET value: a string or number literal, a bare word, or DEFAULT (which clears it).
fn literal(value: &Expr) -> Result<Option<String>, CoordinatorError> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(Some(s.clone())),
            Value::Number(n, _) => Ok(Some(n.to_string())),
            Value::Null => Ok(None),
            other => Err(CoordinatorError::InvalidArgument(format!(
                "SET: {other} is not a value a setting takes"
            ))),
        },
        Expr::Identifier(ident) if ident.value.eq_ignore_ascii_case("default") => Ok(None),
        Expr::Identifier(ident) => Ok(Some(ident.value.clone())),
        Expr::Interval(_) | Expr::UnaryOp { .. } => Ok(Some(value.to_string())),
        other => Err(CoordinatorError::InvalidArgument(format!(
            "SET: {other} is not a value a setting takes"
        ))),
    }
}

/// A time zone Arrow understands: an IANA name or a fixed offset.
fn check_time_zone(tz: &str) -> Result<String, CoordinatorError> {
    let tz = tz.trim();
    let tz = if tz.eq_ignore_ascii_case("utc") {
        "UTC"
    } else {
        tz
    };
    tz.parse::<arrow::array::timezone::Tz>()
        .map(|_| tz.to_string())
        .map_err(|e| {
            CoordinatorError::InvalidArgument(format!("time zone '{tz}' is not valid: {e}"))
        })
}

/// `1073741824`, `512MB`, `1 GiB`, `64k`: a size in bytes (decimal and binary suffixes both
/// count in powers of 1024, as DataFusion's memory settings do).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 512MB, 2GiB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// Where a handler leaves the caller's changed settings, for the authentication layer to
/// sign into the token it returns.
#[derive(Debug, Clone, Default)]
pub struct SettingsSlot(Arc<Mutex<Option<Settings>>>);

impl SettingsSlot {
    /// The slot of a request (a detached one if the layer put none there).
    pub fn of<T>(request: &tonic::Request<T>) -> SettingsSlot {
        request
            .extensions()
            .get::<SettingsSlot>()
            .cloned()
            .unwrap_or_default()
    }

    /// Leaves `settings` as the caller's new settings.
    pub fn put(&self, settings: Settings) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(settings);
    }

    /// The new settings, if a handler left any.
    pub fn take(&self) -> Option<Settings> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Flight's session messages (`Flight.proto`; arrow-flight does not generate them yet).
pub mod wire {
    use std::collections::HashMap;

    /// The action types.
    pub const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
    pub const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
    pub const CLOSE_SESSION: &str = "CloseSession";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringListValue {
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum OptionValue {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(sfixed64, tag = "3")]
        Int64Value(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        StringListValue(StringListValue),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionOptionValue {
        #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
        pub option_value: Option<OptionValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetSessionOptionsRequest {
        #[prost(map = "string, message", tag = "1")]
        pub session_options: HashMap<String, SessionOptionValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetSessionOptionsError {
        #[prost(int32, tag = "1")]
        pub value: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetSessionOptionsResult {
        #[prost(map = "string, message", tag = "1")]
        pub errors: HashMap<String, SetSessionOptionsError>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetSessionOptionsResult {
        #[prost(map = "string, message", tag = "1")]
        pub session_options: HashMap<String, SessionOptionValue>,
    }

    /// `CloseSessionResult.Status.CLOSED`.
    pub const CLOSED: i32 = 1;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CloseSessionResult {
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    /// A session option value as text (`None`: valueless, which clears the option).
    pub fn as_text(value: &SessionOptionValue) -> Result<Option<String>, String> {
        match &value.option_value {
            None => Ok(None),
            Some(OptionValue::StringValue(s)) => Ok(Some(s.clone())),
            Some(OptionValue::Int64Value(n)) => Ok(Some(n.to_string())),
            Some(OptionValue::DoubleValue(n)) => Ok(Some(n.to_string())),
            Some(OptionValue::BoolValue(_)) | Some(OptionValue::StringListValue(_)) => {
                Err("Floe's settings take a string or a number".into())
            }
        }
    }

    /// A text value as a session option value.
    pub fn string(value: String) -> SessionOptionValue {
        SessionOptionValue {
            option_value: Some(OptionValue::StringValue(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn setting(sql: &str) -> (String, Option<String>) {
        let statement = Parser::parse_sql(&GenericDialect {}, sql)
            .expect("parses")
            .remove(0);
        setting_of(&statement).expect("a setting").expect("valid")
    }

    #[test]
    fn statements_that_change_settings() {
        assert_eq!(setting("USE bi"), ("schema".into(), Some("bi".into())));
        assert_eq!(
            setting("SET TIME ZONE 'Europe/Berlin'"),
            ("time_zone".into(), Some("Europe/Berlin".into()))
        );
        assert_eq!(
            setting("SET memory_limit = '512MB'"),
            ("memory_limit".into(), Some("512MB".into()))
        );
        assert_eq!(
            setting("SET target_file_size TO 8388608"),
            ("target_file_size".into(), Some("8388608".into()))
        );
        assert_eq!(
            setting("SET memory_limit = DEFAULT"),
            ("memory_limit".into(), None)
        );
    }

    #[test]
    fn values_are_checked() {
        let mut s = Settings::default();
        let max = 1 << 30;
        s.set("time_zone", Some("+02:00"), max).expect("offset");
        s.set("TIME_ZONE", Some("America/New_York"), max)
            .expect("IANA name");
        assert!(s.set("time_zone", Some("Mars/Olympus"), max).is_err());
        s.set("memory_limit", Some("256MB"), max)
            .expect("below max");
        assert_eq!(s.memory_limit, Some(256 << 20));
        let above = s
            .set("memory_limit", Some("2GB"), max)
            .expect_err("above the max");
        assert!(matches!(above, CoordinatorError::PermissionDenied(_)));
        assert_eq!(s.memory_limit, Some(256 << 20));
        assert!(s.set("target_file_size", Some("10"), max).is_err());
        s.set("target_file_size", Some("8MiB"), max).expect("8 MiB");
        assert_eq!(s.target_file_size, Some(8 << 20));
        let unknown = s.set("datafusion.execution.batch_size", Some("1"), max);
        assert!(matches!(
            unknown.expect_err("unknown"),
            CoordinatorError::InvalidArgument(_)
        ));
        assert!(s.set("catalog", Some("other"), max).is_err());
        s.set("catalog", Some("floe"), max)
            .expect("the one catalog");
    }

    #[test]
    fn settings_round_trip_through_token_claims() {
        let s = Settings {
            schema: Some("odd,name=with\nbreaks".into()),
            time_zone: Some("+05:30".into()),
            memory_limit: Some(1 << 30),
            target_file_size: None,
        };
        assert_eq!(Settings::decode(&s.encode()), Some(s));
        assert_eq!(Settings::decode(""), Some(Settings::default()));
        assert_eq!(Settings::decode("bogus=AAAA"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512MB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
