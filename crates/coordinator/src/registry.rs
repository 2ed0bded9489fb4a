//! The executors the coordinator knows: registration, heartbeats, expiry, and picking one for
//! a task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_proto::control_plane_server::ControlPlane;
use floe_proto::{
    HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse, PROTOCOL_VERSION,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// One live executor.
#[derive(Debug, Clone)]
pub struct ExecutorInfo {
    /// Its id.
    pub id: String,
    /// Its Arrow Flight endpoint.
    pub endpoint: String,
    /// The token the coordinator presents with each task.
    pub task_token: String,
    /// A lazily connected channel to it.
    pub channel: Channel,
    last_seen: Instant,
    /// Tasks it reported running at its last heartbeat.
    pub running_tasks: u32,
}

/// Registered executors, shared by the control-plane service and the scheduler.
#[derive(Debug, Clone)]
pub struct ExecutorRegistry {
    inner: Arc<Mutex<BTreeMap<String, ExecutorInfo>>>,
    heartbeat_interval: Duration,
    expiry: Duration,
    cluster_secret: Option<String>,
}

impl ExecutorRegistry {
    /// A registry that drops executors silent for `expiry`.
    pub fn new(
        heartbeat_interval: Duration,
        expiry: Duration,
        cluster_secret: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::default(),
            heartbeat_interval,
            expiry,
            cluster_secret,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ExecutorInfo>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live executors, in id order.
    pub fn live(&self) -> Vec<ExecutorInfo> {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|e| now.duration_since(e.last_seen) < self.expiry)
            .cloned()
            .collect()
    }

    /// Forgets an executor (it failed a task with a connection error).
    pub fn remove(&self, id: &str) {
        if self.lock().remove(id).is_some() {
            warn!(executor_id = id, "executor dropped");
        }
    }

    /// Drops executors whose heartbeats stopped; returns their ids.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut map = self.lock();
        let dead: Vec<String> = map
            .values()
            .filter(|e| now.duration_since(e.last_seen) >= self.expiry)
            .map(|e| e.id.clone())
            .collect();
        for id in &dead {
            map.remove(id);
            warn!(executor_id = %id, "executor missed its heartbeats; dropped");
        }
        dead
    }

    /// Runs [`Self::expire`] every heartbeat interval until the task is dropped.
    pub async fn reap_forever(self) {
        loop {
            tokio::time::sleep(self.heartbeat_interval).await;
            self.expire();
        }
    }
}

#[tonic::async_trait]
impl ControlPlane for ExecutorRegistry {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "executor speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}",
                req.protocol_version
            )));
        }
        if let Some(secret) = &self.cluster_secret {
            if &req.cluster_secret != secret {
                return Err(Status::unauthenticated("wrong cluster secret"));
            }
        }
        if req.executor_id.is_empty() {
            return Err(Status::invalid_argument(
                "required field 'executor_id' is empty",
            ));
        }
        let channel = Endpoint::from_shared(req.flight_endpoint.clone())
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "flight_endpoint '{}' is not a URL: {e}",
                    req.flight_endpoint
                ))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        let task_token = random_token();
        let info = ExecutorInfo {
            id: req.executor_id.clone(),
            endpoint: req.flight_endpoint.clone(),
            task_token: task_token.clone(),
            channel,
            last_seen: Instant::now(),
            running_tasks: 0,
        };
        self.lock().insert(req.executor_id.clone(), info);
        info!(executor_id = %req.executor_id, endpoint = %req.flight_endpoint, "executor registered");
        println!(
            "FLOE_EXECUTOR_REGISTERED id={} endpoint={}",
            req.executor_id, req.flight_endpoint
        );
        Ok(Response::new(RegisterResponse {
            task_token,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            protocol_version: PROTOCOL_VERSION,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let mut map = self.lock();
        let known = match map.get_mut(&req.executor_id) {
            Some(e) => {
                e.last_seen = Instant::now();
                e.running_tasks = req.running_tasks;
                true
            }
            None => false,
        };
        Ok(Response::new(HeartbeatResponse { known }))
    }
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn request(version: u32, secret: &str) -> Request<RegisterRequest> {
        Request::new(RegisterRequest {
            executor_id: "e1".into(),
            flight_endpoint: "http://127.0.0.1:1".into(),
            protocol_version: version,
            cluster_secret: secret.into(),
        })
    }

    #[tokio::test]
    async fn registration_checks_protocol_version_and_secret() {
        let registry = ExecutorRegistry::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Some("s3cret".into()),
        );
        let err = registry
            .register(request(PROTOCOL_VERSION + 1, "s3cret"))
            .await
            .expect_err("wrong version");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("protocol version"));
        let err = registry
            .register(request(PROTOCOL_VERSION, "guess"))
            .await
            .expect_err("wrong secret");
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(registry.live().is_empty());

        let ok = registry
            .register(request(PROTOCOL_VERSION, "s3cret"))
            .await
            .expect("registers")
            .into_inner();
        assert_eq!(ok.task_token.len(), 64);
        assert_eq!(registry.live().len(), 1);
    }

    #[tokio::test]
    async fn silent_executors_expire_and_must_register_again() {
        let registry =
            ExecutorRegistry::new(Duration::from_millis(10), Duration::from_millis(50), None);
        registry
            .register(request(PROTOCOL_VERSION, ""))
            .await
            .expect("registers");
        let beat = |id: &str| {
            Request::new(HeartbeatRequest {
                executor_id: id.into(),
                running_tasks: 0,
            })
        };
        assert!(
            registry
                .heartbeat(beat("e1"))
                .await
                .expect("ok")
                .into_inner()
                .known
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(registry.live().is_empty(), "expired executors are not live");
        assert_eq!(registry.expire(), vec!["e1".to_string()]);
        assert!(
            !registry
                .heartbeat(beat("e1"))
                .await
                .expect("ok")
                .into_inner()
                .known
        );
    }
}
