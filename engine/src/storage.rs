//! Iceberg `Storage` backed by `object_store`.
//!
//! Every byte Floe reads or writes — table metadata, manifests and Parquet data files — goes
//! through one `object_store` per bucket, configured from one set of FileIO properties (the
//! standard Iceberg keys: `s3.endpoint`, `s3.region`, `s3.access-key-id`,
//! `s3.secret-access-key`, `s3.session-token`, `s3.path-style-access`). Local warehouses use
//! `file://` paths.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

/// How a refusal to touch a location outside the storage roots begins (so that it can be told
/// apart from other storage errors).
pub const OUTSIDE_ROOTS: &str = "outside this process's storage roots";

/// FileIO property: S3 endpoint, e.g. `http://127.0.0.1:8333`.
pub const S3_ENDPOINT: &str = "s3.endpoint";
/// FileIO property: S3 region.
pub const S3_REGION: &str = "s3.region";
/// FileIO property: S3 access key id.
pub const S3_ACCESS_KEY_ID: &str = "s3.access-key-id";
/// FileIO property: S3 secret access key.
pub const S3_SECRET_ACCESS_KEY: &str = "s3.secret-access-key";
/// FileIO property: S3 session token.
pub const S3_SESSION_TOKEN: &str = "s3.session-token";
/// FileIO property: `true` for path-style requests (MinIO, SeaweedFS).
pub const S3_PATH_STYLE_ACCESS: &str = "s3.path-style-access";

/// Object-store settings shared by the catalog's FileIO and every executor's reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageSettings {
    /// S3 endpoint, for S3-compatible servers (SeaweedFS, MinIO).
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// S3 access key id.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    pub s3_secret_access_key: Option<String>,
    /// Path-style requests instead of virtual-hosted buckets.
    pub s3_path_style: bool,
}

impl StorageSettings {
    /// The settings as Iceberg FileIO properties.
    pub fn file_io_props(&self) -> HashMap<String, String> {
        let mut props = HashMap::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                props.insert(k.to_string(), v.clone());
            }
        };
        put(S3_ENDPOINT, &self.s3_endpoint);
        put(S3_REGION, &self.s3_region);
        put(S3_ACCESS_KEY_ID, &self.s3_access_key_id);
        put(S3_SECRET_ACCESS_KEY, &self.s3_secret_access_key);
        if self.s3_path_style {
            props.insert(S3_PATH_STYLE_ACCESS.to_string(), "true".to_string());
        }
        props
    }
}

/// Builds [`ObjectStoreStorage`] for Iceberg's `FileIO`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjectStoreStorageFactory {
    /// When not empty, the only locations the storage reads or writes (see [`within_roots`]).
    pub roots: Vec<String>,
}

#[typetag::serde]
impl StorageFactory for ObjectStoreStorageFactory {
    fn build(&self, config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        let mut storage = ObjectStoreStorage::new(config.props().clone());
        storage.roots = self.roots.clone();
        Ok(Arc::new(storage))
    }
}

/// A FileIO with these storage settings that reads and writes only under `roots` (what an
/// executor runs every task with).
pub fn confined_file_io(settings: &StorageSettings, roots: Vec<String>) -> iceberg::io::FileIO {
    iceberg::io::FileIOBuilder::new(Arc::new(ObjectStoreStorageFactory { roots }))
        .with_props(settings.file_io_props())
        .build()
}

/// Whether `location` is an object under one of `roots` (`s3://bucket/prefix`,
/// `file:///dir`): same scheme and bucket, and the root's path segments as a prefix of the
/// location's. Locations with `.` or `..` segments (also percent-encoded), backslashes,
/// control characters, a query or a fragment are never within a root.
pub fn within_roots(location: &str, roots: &[String]) -> bool {
    let Some(location) = clean_url(location) else {
        return false;
    };
    roots.iter().filter_map(|r| clean_url(r)).any(|root| {
        root.scheme() == location.scheme() && root.host_str() == location.host_str() && {
            let root_segments: Vec<&str> = segments(&root);
            let segments = segments(&location);
            segments.len() > root_segments.len() && segments.starts_with(&root_segments)
        }
    })
}

fn clean_url(text: &str) -> Option<Url> {
    let lower = text.to_ascii_lowercase();
    if text.contains('\\') || text.chars().any(char::is_control) || lower.contains("%2e") {
        return None;
    }
    let url = Url::parse(text).ok()?;
    if url.query().is_some() || url.fragment().is_some() {
        return None;
    }
    // The raw text, not the parsed URL (which resolves dot segments away).
    let path = text.split_once("://").map(|(_, rest)| rest)?;
    if path.split('/').skip(1).any(|s| s == "." || s == "..") {
        return None;
    }
    Some(url)
}

fn segments(url: &Url) -> Vec<&str> {
    url.path().split('/').filter(|s| !s.is_empty()).collect()
}

/// Iceberg storage over `object_store`, one store per scheme and bucket, built on first use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjectStoreStorage {
    props: HashMap<String, String>,
    /// When not empty, every location must be within one of these (see [`within_roots`]).
    roots: Vec<String>,
    #[serde(skip)]
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

impl ObjectStoreStorage {
    /// A storage that builds its stores from these FileIO properties.
    pub fn new(props: HashMap<String, String>) -> Self {
        Self {
            props,
            roots: Vec::new(),
            stores: Arc::default(),
        }
    }

    /// The store for `location` and the object's path inside it.
    pub fn resolve(&self, location: &str) -> iceberg::Result<(Arc<dyn ObjectStore>, Path)> {
        if !self.roots.is_empty() && !within_roots(location, &self.roots) {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!("{OUTSIDE_ROOTS}: '{location}'"),
            ));
        }
        let url = Url::parse(location).map_err(|e| {
            iceberg::Error::new(
                iceberg::ErrorKind::DataInvalid,
                format!("invalid object location '{location}': {e}"),
            )
        })?;
        let key = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        let path = match url.scheme() {
            "file" => Path::from_url_path(url.path()),
            _ => Path::from_url_path(url.path().trim_start_matches('/')),
        }
        .map_err(|e| io_error(location, "parse path of", e.into()))?;
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&key) {
            return Ok((Arc::clone(store), path));
        }
        let store = build_store(&url, &self.props)?;
        stores.insert(key, Arc::clone(&store));
        Ok((store, path))
    }
}

/// Builds the `object_store` for one URL's scheme and bucket from FileIO properties.
pub fn build_store(
    url: &Url,
    props: &HashMap<String, String>,
) -> iceberg::Result<Arc<dyn ObjectStore>> {
    match url.scheme() {
        "file" => Ok(Arc::new(LocalFileSystem::new())),
        "s3" | "s3a" => {
            let bucket = url.host_str().ok_or_else(|| {
                iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    format!("S3 location '{url}' names no bucket"),
                )
            })?;
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = props.get(S3_ENDPOINT) {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            if let Some(region) = props.get(S3_REGION).or_else(|| props.get("client.region")) {
                builder = builder.with_region(region);
            }
            if let Some(key) = props.get(S3_ACCESS_KEY_ID) {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = props.get(S3_SECRET_ACCESS_KEY) {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = props.get(S3_SESSION_TOKEN) {
                builder = builder.with_token(token);
            }
            let path_style = props
                .get(S3_PATH_STYLE_ACCESS)
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(props.contains_key(S3_ENDPOINT));
            builder = builder.with_virtual_hosted_style_request(!path_style);
            let store = builder.build().map_err(|e| {
                iceberg::Error::new(
                    iceberg::ErrorKind::DataInvalid,
                    format!("cannot configure S3 for bucket '{bucket}': {e}"),
                )
            })?;
            Ok(Arc::new(store))
        }
        other => Err(iceberg::Error::new(
            iceberg::ErrorKind::FeatureUnsupported,
            format!("storage scheme '{other}' is not supported (location '{url}')"),
        )),
    }
}

fn io_error(location: &str, what: &str, e: object_store::Error) -> iceberg::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => iceberg::ErrorKind::DataInvalid,
        _ => iceberg::ErrorKind::Unexpected,
    };
    let reason = match &e {
        object_store::Error::NotFound { .. } => "object not found".to_string(),
        other => other.to_string(),
    };
    iceberg::Error::new(kind, format!("cannot {what} '{location}': {reason}")).with_source(e)
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStoreStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        let (store, p) = self.resolve(path)?;
        match store.head(&p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io_error(path, "stat", e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let (store, p) = self.resolve(path)?;
        let meta = store
            .head(&p)
            .await
            .map_err(|e| io_error(path, "stat", e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let (store, p) = self.resolve(path)?;
        let result = store.get(&p).await.map_err(|e| io_error(path, "read", e))?;
        result.bytes().await.map_err(|e| io_error(path, "read", e))
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        let (store, location) = self.resolve(path)?;
        Ok(Box::new(ObjectReader {
            store,
            location,
            name: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        let (store, p) = self.resolve(path)?;
        store
            .put(&p, PutPayload::from(bs))
            .await
            .map_err(|e| io_error(path, "write", e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let (store, location) = self.resolve(path)?;
        Ok(Box::new(ObjectWriter {
            store,
            location,
            name: path.to_string(),
            buffer: Some(BytesMut::new()),
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        let (store, p) = self.resolve(path)?;
        match store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(path, "delete", e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let (store, p) = self.resolve(path)?;
        let objects: Vec<_> = store
            .list(Some(&p))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| io_error(path, "list", e))?;
        for object in objects {
            match store.delete(&object).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io_error(path, "delete", e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    location: Path,
    name: String,
}

#[async_trait]
impl FileRead for ObjectReader {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.location, range)
            .await
            .map_err(|e| io_error(&self.name, "read", e))
    }
}

struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    location: Path,
    name: String,
    buffer: Option<BytesMut>,
}

#[async_trait]
impl FileWrite for ObjectWriter {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        match self.buffer.as_mut() {
            Some(buffer) => {
                buffer.extend_from_slice(&bs);
                Ok(())
            }
            None => Err(closed(&self.name)),
        }
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let buffer = self.buffer.take().ok_or_else(|| closed(&self.name))?;
        self.store
            .put(&self.location, PutPayload::from(buffer.freeze()))
            .await
            .map_err(|e| io_error(&self.name, "write", e))?;
        Ok(())
    }
}

fn closed(name: &str) -> iceberg::Error {
    iceberg::Error::new(
        iceberg::ErrorKind::Unexpected,
        format!("writer for '{name}' is already closed"),
    )
}

#[cfg(test)]
mod tests {
    use super::within_roots;

    #[test]
    fn locations_must_lie_under_a_root() {
        let roots = vec![
            "s3://bucket/warehouse".to_string(),
            "file:///srv/floe/wh/".to_string(),
        ];
        for inside in [
            "s3://bucket/warehouse/ns/t/data/a.parquet",
            "s3://bucket/warehouse/x",
            "file:///srv/floe/wh/ns/t/data/00000-a.parquet",
        ] {
            assert!(within_roots(inside, &roots), "{inside} is inside");
        }
        for outside in [
            "s3://bucket/warehouse",
            "s3://bucket/warehouse2/t/a.parquet",
            "s3://other/warehouse/t/a.parquet",
            "s3://bucket/warehouse/../secrets/a",
            "s3://bucket/warehouse/ns/%2e%2e/%2E%2E/x",
            "s3://bucket/warehouse/./x",
            "file:///etc/passwd",
            "file:///srv/floe/wh/../../../etc/passwd",
            "file:///srv/floe/wh/a\\..\\..\\x",
            "file:///srv/floe/whx/a.parquet",
            "file:///srv/floe/wh/a?x=1",
            "file:///srv/floe/wh/a\u{0}b",
            "http://bucket/warehouse/a",
            "/srv/floe/wh/a.parquet",
            "",
        ] {
            assert!(!within_roots(outside, &roots), "{outside} is outside");
        }
        assert!(!within_roots("s3://bucket/warehouse/a", &[]));
    }
}
