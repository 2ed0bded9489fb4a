//! Registering with the coordinator and heartbeating; re-registering when it forgets us.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use floe_proto::control_plane_client::ControlPlaneClient;
use floe_proto::{HeartbeatRequest, RegisterRequest, PROTOCOL_VERSION};
use tracing::{info, warn};

use crate::service::ExecutorState;

/// Runs forever: register, then heartbeat at the interval the coordinator asks for; on any
/// failure wait `retry` and register again.
pub async fn run(
    coordinator_url: String,
    endpoint: String,
    cluster_secret: Option<String>,
    state: Arc<ExecutorState>,
    retry: Duration,
) {
    let mut announced = false;
    loop {
        match register_and_heartbeat(
            &coordinator_url,
            &endpoint,
            &cluster_secret,
            &state,
            &mut announced,
        )
        .await
        {
            Ok(()) => info!("coordinator forgot this executor; registering again"),
            Err(e) => warn!(coordinator = %coordinator_url, "registration failed: {e}"),
        }
        tokio::time::sleep(retry).await;
    }
}

async fn register_and_heartbeat(
    coordinator_url: &str,
    endpoint: &str,
    cluster_secret: &Option<String>,
    state: &Arc<ExecutorState>,
    announced: &mut bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = ControlPlaneClient::connect(coordinator_url.to_string()).await?;
    let response = client
        .register(RegisterRequest {
            executor_id: state.executor_id.clone(),
            flight_endpoint: endpoint.to_string(),
            protocol_version: PROTOCOL_VERSION,
            cluster_secret: cluster_secret.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    *state.task_token.write().unwrap_or_else(|p| p.into_inner()) = Some(response.task_token);
    info!(executor_id = %state.executor_id, "registered with coordinator {coordinator_url}");
    if !*announced {
        println!(
            "FLOE_EXECUTOR_READY flight={}",
            endpoint.trim_start_matches("http://")
        );
        *announced = true;
    }
    let interval = Duration::from_millis(response.heartbeat_interval_ms.clamp(100, 60_000));
    loop {
        tokio::time::sleep(interval).await;
        let known = client
            .heartbeat(HeartbeatRequest {
                executor_id: state.executor_id.clone(),
                running_tasks: state.running_tasks.load(Ordering::SeqCst) as u32,
            })
            .await?
            .into_inner()
            .known;
        if !known {
            return Ok(());
        }
    }
}
