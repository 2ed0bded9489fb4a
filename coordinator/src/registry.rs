//! The executors the coordinator knows: admission (challenge and proof on the cluster secret),
//! heartbeats, expiry, and picking one for a task.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_proto::auth::{self, ClusterSecret, Tag};
use floe_proto::control_plane_server::ControlPlane;
use floe_proto::{
    ChallengeRequest, ChallengeResponse, HeartbeatRequest, HeartbeatResponse, RegisterRequest,
    RegisterResponse, PROTOCOL_VERSION,
};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// One live executor.
#[derive(Debug, Clone)]
pub struct ExecutorInfo {
    /// Its id.
    pub id: String,
    /// Its Arrow Flight endpoint.
    pub endpoint: String,
    /// The key of its registration: every task sent to it is MACed with it.
    pub session_key: Tag,
    /// The channel to it (`floe_engine::runtime::internal_channel`).
    pub channel: floe_engine::runtime::InternalChannel,
    last_seen: Instant,
    last_sequence: u64,
    /// Tasks it reported running at its last heartbeat.
    pub running_tasks: u32,
    /// How many tasks of a stage it runs at once (what it registered with).
    pub task_slots: u32,
}

/// The most task slots one executor may register with.
pub const MAX_TASK_SLOTS: u32 = 1024;

/// How long a challenge may be answered.
const CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// Challenges outstanding at once; beyond it the oldest unanswered one is forgotten.
const MAX_CHALLENGES: usize = 1024;

/// Registered executors, shared by the control-plane service and the scheduler.
#[derive(Debug, Clone)]
pub struct ExecutorRegistry {
    inner: Arc<Mutex<BTreeMap<String, ExecutorInfo>>>,
    challenges: Arc<Mutex<HashMap<Tag, Instant>>>,
    heartbeat_interval: Duration,
    expiry: Duration,
    secret: ClusterSecret,
}

impl ExecutorRegistry {
    /// A registry that admits executors proving they hold `secret` and drops executors silent
    /// for `expiry`.
    pub fn new(heartbeat_interval: Duration, expiry: Duration, secret: ClusterSecret) -> Self {
        Self {
            inner: Arc::default(),
            challenges: Arc::default(),
            heartbeat_interval,
            expiry,
            secret,
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

    /// Takes a challenge nonce if it was handed out and is still fresh (each is used once).
    fn take_challenge(&self, nonce: &[u8]) -> bool {
        let Ok(nonce) = Tag::try_from(nonce) else {
            return false;
        };
        let mut challenges = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        matches!(challenges.remove(&nonce), Some(issued) if issued.elapsed() < CHALLENGE_TTL)
    }
}

fn check_version(version: u32) -> Result<(), Status> {
    if version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "executor speaks protocol version {version}, this coordinator speaks {PROTOCOL_VERSION}"
        )));
    }
    Ok(())
}

/// The one answer to every failed proof: it says nothing about which part was wrong.
fn not_admitted() -> Status {
    Status::unauthenticated(
        "not admitted: the registration does not prove the cluster secret (or its challenge \
         expired)",
    )
}

#[tonic::async_trait]
impl ControlPlane for ExecutorRegistry {
    async fn challenge(
        &self,
        request: Request<ChallengeRequest>,
    ) -> Result<Response<ChallengeResponse>, Status> {
        check_version(request.into_inner().protocol_version)?;
        let nonce = floe_engine::runtime::random_nonce();
        {
            let mut challenges = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
            challenges.retain(|_, issued| issued.elapsed() < CHALLENGE_TTL);
            if challenges.len() >= MAX_CHALLENGES {
                if let Some(oldest) = challenges
                    .iter()
                    .min_by_key(|(_, issued)| **issued)
                    .map(|(n, _)| *n)
                {
                    challenges.remove(&oldest);
                }
            }
            challenges.insert(nonce, Instant::now());
        }
        Ok(Response::new(ChallengeResponse {
            coordinator_nonce: nonce.to_vec(),
            protocol_version: PROTOCOL_VERSION,
        }))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        check_version(req.protocol_version)?;
        if !self.take_challenge(&req.coordinator_nonce) || req.executor_nonce.len() != auth::LEN {
            return Err(not_admitted());
        }
        let expected = self.secret.register_proof(
            &req.coordinator_nonce,
            &req.executor_nonce,
            &req.executor_id,
            &req.flight_endpoint,
            req.protocol_version,
            req.task_slots,
        );
        if !auth::verify(&expected, &req.proof) {
            warn!(executor_id = %req.executor_id, "registration with a wrong proof refused");
            return Err(not_admitted());
        }
        if req.executor_id.is_empty() {
            return Err(Status::invalid_argument(
                "required field 'executor_id' is empty",
            ));
        }
        if !(1..=MAX_TASK_SLOTS).contains(&req.task_slots) {
            return Err(Status::invalid_argument(format!(
                "task_slots {} is not between 1 and {MAX_TASK_SLOTS}",
                req.task_slots
            )));
        }
        if !(req.flight_endpoint.starts_with("http://")
            || req.flight_endpoint.starts_with("https://"))
        {
            return Err(Status::invalid_argument(format!(
                "flight_endpoint '{}' is not an http(s) URL",
                req.flight_endpoint
            )));
        }
        let channel =
            floe_engine::runtime::internal_channel(&req.flight_endpoint).map_err(|e| {
                Status::invalid_argument(format!(
                    "flight_endpoint '{}' is not a URL: {e}",
                    req.flight_endpoint
                ))
            })?;
        let session_key = self.secret.session_key(
            &req.coordinator_nonce,
            &req.executor_nonce,
            &req.executor_id,
        );
        let info = ExecutorInfo {
            id: req.executor_id.clone(),
            endpoint: req.flight_endpoint.clone(),
            session_key,
            channel,
            last_seen: Instant::now(),
            last_sequence: 0,
            running_tasks: 0,
            task_slots: req.task_slots,
        };
        self.lock().insert(req.executor_id.clone(), info);
        info!(executor_id = %req.executor_id, endpoint = %req.flight_endpoint, task_slots = req.task_slots, "executor registered");
        println!(
            "FLOE_EXECUTOR_REGISTERED id={} endpoint={}",
            req.executor_id, req.flight_endpoint
        );
        Ok(Response::new(RegisterResponse {
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            protocol_version: PROTOCOL_VERSION,
            proof: self
                .secret
                .coordinator_proof(
                    &req.coordinator_nonce,
                    &req.executor_nonce,
                    &req.executor_id,
                )
                .to_vec(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let mut map = self.lock();
        let Some(e) = map.get_mut(&req.executor_id) else {
            return Ok(Response::new(HeartbeatResponse { known: false }));
        };
        let expected = auth::heartbeat_mac(
            &e.session_key,
            &req.executor_id,
            req.running_tasks,
            req.sequence,
        );
        if !auth::verify(&expected, &req.proof) || req.sequence <= e.last_sequence {
            return Err(Status::unauthenticated(
                "heartbeat does not prove the executor's registration",
            ));
        }
        e.last_seen = Instant::now();
        e.last_sequence = req.sequence;
        e.running_tasks = req.running_tasks;
        Ok(Response::new(HeartbeatResponse { known: true }))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret::new("s3cret-s3cret-s3cret").expect("long enough")
    }

    async fn challenge(registry: &ExecutorRegistry) -> Vec<u8> {
        registry
            .challenge(Request::new(ChallengeRequest {
                protocol_version: PROTOCOL_VERSION,
            }))
            .await
            .expect("challenge")
            .into_inner()
            .coordinator_nonce
    }

    fn request(nonce: &[u8], version: u32, secret: &ClusterSecret) -> Request<RegisterRequest> {
        with_slots(nonce, version, secret, 3, 3)
    }

    /// A registration that says `sent` task slots and proves `signed`.
    fn with_slots(
        nonce: &[u8],
        version: u32,
        secret: &ClusterSecret,
        signed: u32,
        sent: u32,
    ) -> Request<RegisterRequest> {
        let executor_nonce = [9u8; auth::LEN];
        let endpoint = "http://127.0.0.1:1";
        Request::new(RegisterRequest {
            executor_id: "e1".into(),
            flight_endpoint: endpoint.into(),
            protocol_version: version,
            coordinator_nonce: nonce.to_vec(),
            executor_nonce: executor_nonce.to_vec(),
            proof: secret
                .register_proof(nonce, &executor_nonce, "e1", endpoint, version, signed)
                .to_vec(),
            task_slots: sent,
        })
    }

    #[tokio::test]
    async fn registration_needs_a_fresh_challenge_and_the_secret() {
        let registry =
            ExecutorRegistry::new(Duration::from_millis(100), Duration::from_secs(5), secret());
        let nonce = challenge(&registry).await;
        let err = registry
            .register(request(&nonce, PROTOCOL_VERSION + 1, &secret()))
            .await
            .expect_err("wrong version");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("protocol version"));

        let wrong = ClusterSecret::new("guess-guess-guess-guess").expect("long enough");
        let err = registry
            .register(request(&nonce, PROTOCOL_VERSION, &wrong))
            .await
            .expect_err("wrong secret");
        assert_eq!(err.code(), Code::Unauthenticated);
        // The challenge was used up by the failed attempt.
        let err = registry
            .register(request(&nonce, PROTOCOL_VERSION, &secret()))
            .await
            .expect_err("challenge used");
        assert_eq!(err.code(), Code::Unauthenticated);
        // A nonce the coordinator never issued.
        let err = registry
            .register(request(&[1u8; auth::LEN], PROTOCOL_VERSION, &secret()))
            .await
            .expect_err("unknown challenge");
        assert_eq!(err.code(), Code::Unauthenticated);
        // Task slots are part of the proof: a registration altered on the way is refused, and
        // one without any (or with more than a machine has) says why.
        let nonce = challenge(&registry).await;
        let err = registry
            .register(with_slots(&nonce, PROTOCOL_VERSION, &secret(), 3, 300))
            .await
            .expect_err("slots altered");
        assert_eq!(err.code(), Code::Unauthenticated);
        for slots in [0, MAX_TASK_SLOTS + 1] {
            let nonce = challenge(&registry).await;
            let err = registry
                .register(with_slots(
                    &nonce,
                    PROTOCOL_VERSION,
                    &secret(),
                    slots,
                    slots,
                ))
                .await
                .expect_err("slots out of range");
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().contains("task_slots"), "{err:?}");
        }
        assert!(registry.live().is_empty());

        let nonce = challenge(&registry).await;
        let ok = registry
            .register(request(&nonce, PROTOCOL_VERSION, &secret()))
            .await
            .expect("registers")
            .into_inner();
        let expected = secret().coordinator_proof(&nonce, &[9u8; auth::LEN], "e1");
        assert!(
            auth::verify(&expected, &ok.proof),
            "coordinator proves the secret"
        );
        let live = registry.live();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].task_slots, 3);
        assert_eq!(
            live[0].session_key,
            secret().session_key(&nonce, &[9u8; auth::LEN], "e1")
        );
        // Replaying the accepted registration is refused (its challenge is gone).
        let err = registry
            .register(request(&nonce, PROTOCOL_VERSION, &secret()))
            .await
            .expect_err("replayed");
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn heartbeats_must_carry_the_session_mac_and_expire() {
        let registry = ExecutorRegistry::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
            secret(),
        );
        let nonce = challenge(&registry).await;
        registry
            .register(request(&nonce, PROTOCOL_VERSION, &secret()))
            .await
            .expect("registers");
        let key = secret().session_key(&nonce, &[9u8; auth::LEN], "e1");
        let beat = |id: &str, seq: u64, key: &Tag| {
            Request::new(HeartbeatRequest {
                executor_id: id.into(),
                running_tasks: 0,
                sequence: seq,
                proof: auth::heartbeat_mac(key, id, 0, seq).to_vec(),
            })
        };
        assert!(
            registry
                .heartbeat(beat("e1", 1, &key))
                .await
                .expect("ok")
                .into_inner()
                .known
        );
        let err = registry
            .heartbeat(beat("e1", 1, &key))
            .await
            .expect_err("replayed sequence");
        assert_eq!(err.code(), Code::Unauthenticated);
        let err = registry
            .heartbeat(beat("e1", 2, &[0u8; auth::LEN]))
            .await
            .expect_err("wrong key");
        assert_eq!(err.code(), Code::Unauthenticated);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(registry.live().is_empty(), "expired executors are not live");
        assert_eq!(registry.expire(), vec!["e1".to_string()]);
        assert!(
            !registry
                .heartbeat(beat("e1", 3, &key))
                .await
                .expect("ok")
                .into_inner()
                .known
        );
    }
}
