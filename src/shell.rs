//! `floe sql`: a small Flight SQL shell.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use clap::Args;
use futures::TryStreamExt;
use tonic::transport::Endpoint;

/// Flags of `floe sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The coordinator's Flight SQL address.
    #[arg(long, env = "FLOE_URI", default_value = "http://127.0.0.1:50051")]
    pub uri: String,
    /// Run these statements (separated by `;`) and exit; without it, read statements from stdin.
    #[arg(short = 'e', long)]
    pub execute: Option<String>,
    /// Sign in as this user (a coordinator started with --users); the password comes from
    /// FLOE_PASSWORD.
    #[arg(long, env = "FLOE_USER")]
    pub user: Option<String>,
    /// The user's password.
    #[arg(long, env = "FLOE_PASSWORD", hide_env_values = true, hide = true)]
    pub password: Option<String>,
}

/// Runs the shell.
pub async fn run(args: SqlArgs) -> Result<()> {
    let uri = args.uri.replace("grpc://", "http://");
    let channel = Endpoint::from_shared(uri.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {uri}"))?;
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some(user) = &args.user {
        let password = args.password.as_deref().unwrap_or_default();
        client
            .handshake(user, password)
            .await
            .with_context(|| format!("signing in as {user}"))?;
    }
    if let Some(sql) = args.execute {
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            query(&mut client, statement).await?;
        }
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    prompt(&buffer);
    for line in stdin.lock().lines() {
        buffer.push_str(&line?);
        buffer.push('\n');
        while let Some(end) = buffer.find(';') {
            let statement = buffer[..end].trim().to_string();
            buffer = buffer[end + 1..].to_string();
            if !statement.is_empty() {
                if let Err(e) = query(&mut client, &statement).await {
                    eprintln!("error: {e:#}");
                }
            }
        }
        prompt(&buffer);
    }
    Ok(())
}

fn prompt(buffer: &str) {
    print!(
        "{}",
        if buffer.trim().is_empty() {
            "floe> "
        } else {
            "   -> "
        }
    );
    let _ = std::io::stdout().flush();
}

async fn query(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<()> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.context("endpoint without ticket")?;
        let stream = client.do_get(ticket).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}
