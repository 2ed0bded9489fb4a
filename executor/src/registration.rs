//! Admission with the coordinator (challenge, proof, the coordinator's proof back) and
//! heartbeats; registering again when the coordinator forgets this executor.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use floe_proto::auth;
use floe_proto::control_plane_client::ControlPlaneClient;
use floe_proto::{ChallengeRequest, HeartbeatRequest, RegisterRequest, PROTOCOL_VERSION};
use tracing::{info, warn};

use crate::service::ExecutorState;

/// Runs forever: register, then heartbeat at the interval the coordinator asks for; on any
/// failure wait `retry` and register again.
pub async fn run(
    coordinator_url: String,
    coordinator_ca: Option<tonic::transport::Certificate>,
    endpoint: String,
    task_slots: u32,
    state: Arc<ExecutorState>,
    retry: Duration,
) {
    let mut announced = false;
    loop {
        match register_and_heartbeat(
            &coordinator_url,
            coordinator_ca.as_ref(),
            &endpoint,
            task_slots,
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
    coordinator_ca: Option<&tonic::transport::Certificate>,
    endpoint: &str,
    task_slots: u32,
    state: &Arc<ExecutorState>,
    announced: &mut bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut endpoint_config = tonic::transport::Endpoint::from_shared(coordinator_url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    if let Some(ca) = coordinator_ca {
        endpoint_config = endpoint_config
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone()))?;
    }
    let channel = endpoint_config.connect().await?;
    let mut client = ControlPlaneClient::new(channel);
    let challenge = client
        .challenge(ChallengeRequest {
            protocol_version: PROTOCOL_VERSION,
        })
        .await?
        .into_inner();
    let executor_nonce = floe_engine::runtime::random_nonce();
    let id = &state.executor_id;
    let proof = state.secret.register_proof(
        &challenge.coordinator_nonce,
        &executor_nonce,
        id,
        endpoint,
        PROTOCOL_VERSION,
        task_slots,
    );
    let response = client
        .register(RegisterRequest {
            executor_id: id.clone(),
            flight_endpoint: endpoint.to_string(),
            protocol_version: PROTOCOL_VERSION,
            coordinator_nonce: challenge.coordinator_nonce.clone(),
            executor_nonce: executor_nonce.to_vec(),
            proof: proof.to_vec(),
            task_slots,
        })
        .await?
        .into_inner();
    let expected =
        state
            .secret
            .coordinator_proof(&challenge.coordinator_nonce, &executor_nonce, id);
    if !auth::verify(&expected, &response.proof) {
        return Err("the coordinator did not prove that it holds the cluster secret".into());
    }
    let session_key = state
        .secret
        .session_key(&challenge.coordinator_nonce, &executor_nonce, id);
    state.set_session_key(session_key);
    info!(executor_id = %id, "registered with coordinator {coordinator_url}");
    if !*announced {
        println!(
            "FLOE_EXECUTOR_READY flight={}",
            endpoint.trim_start_matches("http://")
        );
        *announced = true;
    }
    let interval = Duration::from_millis(response.heartbeat_interval_ms.clamp(100, 60_000));
    let mut sequence = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        sequence += 1;
        let running = state.running_tasks.load(Ordering::SeqCst) as u32;
        let known = client
            .heartbeat(HeartbeatRequest {
                executor_id: id.clone(),
                running_tasks: running,
                sequence,
                proof: auth::heartbeat_mac(&session_key, id, running, sequence).to_vec(),
            })
            .await?
            .into_inner()
            .known;
        if !known {
            return Ok(());
        }
    }
}
