//! Committing to a REST catalog: Floe sends the updates as a `CommitTableRequest` with the
//! table's UUID and what it read as requirements; the catalog answers 409 when another commit
//! got there first.

use async_trait::async_trait;
use datafusion::common::Result;
use floe_engine::error::FloeError;
use iceberg::table::Table;
use iceberg::{TableIdent, TableRequirement, TableUpdate};

use super::{unavailable, Committer};

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
    ) -> floe_engine::error::Result<Option<Self>> {
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
        let config_error = |e: String| FloeError::Unavailable(format!("REST catalog config: {e}"));
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

    async fn send(
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

#[async_trait]
impl Committer for RestCommit {
    async fn current_location(
        &self,
        _ident: &TableIdent,
    ) -> Option<std::result::Result<Option<String>, String>> {
        None
    }

    async fn commit(
        &self,
        table: &Table,
        updates: Vec<TableUpdate>,
        requirements: Vec<TableRequirement>,
        name: &str,
    ) -> Result<bool> {
        self.send(table.identifier(), requirements, updates, name)
            .await
    }
}
