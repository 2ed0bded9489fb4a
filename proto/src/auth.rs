//! Admission and message authentication inside a Floe cluster, on one shared secret that never
//! crosses the wire.
//!
//! ```text
//!  executor                                        coordinator
//!     │ ── Challenge ─────────────────────────────▶ │  fresh single-use nonce Nc
//!     │ ◀──────────────────────────────────── Nc ── │
//!     │ ── Register(id, endpoint, Nc, Ne,           │
//!     │      proof = MAC(secret, Nc, Ne, id, …)) ─▶ │  checks the proof, consumes Nc
//!     │ ◀──── MAC(secret, "coordinator", Nc, Ne) ── │  the coordinator proves it too
//!     │   both derive session key S = MAC(secret, Nc, Ne, id); S is never sent
//!     │ ◀── DoGet(task body, MAC(S, body)) ──────── │  only the coordinator can make tasks
//!  executor ── DoGet(read body, MAC(K, body)) ──▶ executor   K = MAC(secret, "shuffle")
//! ```
//!
//! Every MAC is HMAC-SHA256 over a label and length-prefixed parts, so no two kinds of message
//! can be confused and no part can bleed into the next. A peer that does not know the secret
//! learns nothing it can reuse from what it sees: tasks and shuffle reads carry a MAC over
//! their own bytes (a changed file path breaks it) and a nonce (a replayed one is refused).
//! Mutual TLS would also hide the task contents; it needs an operator CA, which `floe
//! standalone` could not have, so the shared secret is the mechanism every deployment has.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of every MAC, key and nonce.
pub const LEN: usize = 32;

/// The shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// A 32-byte MAC or key.
pub type Tag = [u8; LEN];

/// The cluster's shared secret, held by the coordinator and every executor.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

/// A secret too short to be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakSecret;

impl std::fmt::Display for WeakSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the cluster secret must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
        )
    }
}

impl std::error::Error for WeakSecret {}

impl ClusterSecret {
    /// A secret from operator-supplied text (at least [`MIN_SECRET_LEN`] bytes).
    pub fn new(text: &str) -> Result<Self, WeakSecret> {
        let text = text.trim();
        if text.len() < MIN_SECRET_LEN {
            return Err(WeakSecret);
        }
        Ok(Self(text.as_bytes().to_vec()))
    }

    /// A secret from random bytes (what `floe standalone` makes for its own executors).
    pub fn from_random(bytes: Tag) -> Self {
        Self(bytes.to_vec())
    }

    /// The executor's proof that it knows the secret, for one challenge, over what it says of
    /// itself.
    pub fn register_proof(
        &self,
        coordinator_nonce: &[u8],
        executor_nonce: &[u8],
        executor_id: &str,
        endpoint: &str,
        protocol_version: u32,
        task_slots: u32,
    ) -> Tag {
        mac(
            &self.0,
            "floe/register",
            &[
                coordinator_nonce,
                executor_nonce,
                executor_id.as_bytes(),
                endpoint.as_bytes(),
                &protocol_version.to_be_bytes(),
                &task_slots.to_be_bytes(),
            ],
        )
    }

    /// The coordinator's proof, in its answer to a registration, that it knows the secret too.
    pub fn coordinator_proof(
        &self,
        coordinator_nonce: &[u8],
        executor_nonce: &[u8],
        executor_id: &str,
    ) -> Tag {
        mac(
            &self.0,
            "floe/registered",
            &[coordinator_nonce, executor_nonce, executor_id.as_bytes()],
        )
    }

    /// The key of one registration: tasks for that executor and its heartbeats are MACed
    /// with it. Both sides derive it; it is never sent.
    pub fn session_key(
        &self,
        coordinator_nonce: &[u8],
        executor_nonce: &[u8],
        executor_id: &str,
    ) -> Tag {
        mac(
            &self.0,
            "floe/session",
            &[coordinator_nonce, executor_nonce, executor_id.as_bytes()],
        )
    }

    /// The key executors MAC shuffle reads with (every admitted executor can derive it).
    pub fn shuffle_key(&self) -> Tag {
        mac(&self.0, "floe/shuffle", &[])
    }

    /// The key the coordinator MACs its clients' bearer tokens with (known only to members).
    pub fn client_token_key(&self) -> Tag {
        mac(&self.0, "floe/client-token", &[])
    }
}

/// The MAC of a task's bytes under an executor's session key.
pub fn task_mac(session_key: &Tag, body: &[u8]) -> Tag {
    mac(session_key, "floe/task", &[body])
}

/// The MAC of a shuffle read's bytes under the cluster's shuffle key.
pub fn shuffle_read_mac(shuffle_key: &Tag, body: &[u8]) -> Tag {
    mac(shuffle_key, "floe/shuffle-read", &[body])
}

/// The MAC of a runtime filter's keys under the cluster's shuffle key.
pub fn runtime_filter_mac(shuffle_key: &Tag, body: &[u8]) -> Tag {
    mac(shuffle_key, "floe/runtime-filter", &[body])
}

/// The MAC of a heartbeat under the executor's session key.
pub fn heartbeat_mac(session_key: &Tag, executor_id: &str, running: u32, sequence: u64) -> Tag {
    mac(
        session_key,
        "floe/heartbeat",
        &[
            executor_id.as_bytes(),
            &running.to_be_bytes(),
            &sequence.to_be_bytes(),
        ],
    )
}

/// Whether `given` equals `expected`, in time that does not depend on where they differ.
pub fn verify(expected: &Tag, given: &[u8]) -> bool {
    if given.len() != LEN {
        return false;
    }
    expected
        .iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn mac(key: &[u8], label: &str, parts: &[&[u8]]) -> Tag {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any size");
    m.update(label.as_bytes());
    for part in parts {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_every_part_and_the_secret() {
        let s = ClusterSecret::new("0123456789abcdef").expect("long enough");
        let other = ClusterSecret::new("0123456789abcdeX").expect("long enough");
        let p = s.register_proof(b"nc", b"ne", "e1", "http://h:1", 3, 2);
        assert_eq!(p, s.register_proof(b"nc", b"ne", "e1", "http://h:1", 3, 2));
        assert_ne!(
            p,
            other.register_proof(b"nc", b"ne", "e1", "http://h:1", 3, 2)
        );
        assert_ne!(p, s.register_proof(b"nc", b"ne", "e2", "http://h:1", 3, 2));
        assert_ne!(p, s.register_proof(b"nc", b"ne", "e1", "http://h:2", 3, 2));
        assert_ne!(p, s.register_proof(b"nc", b"nf", "e1", "http://h:1", 3, 2));
        assert_ne!(p, s.register_proof(b"nc", b"ne", "e1", "http://h:1", 3, 3));
        // Length prefixes: moving a byte from one part to the next changes the MAC.
        assert_ne!(
            s.session_key(b"ab", b"c", "e"),
            s.session_key(b"a", b"bc", "e")
        );
        assert_ne!(
            s.coordinator_proof(b"nc", b"ne", "e1"),
            s.session_key(b"nc", b"ne", "e1")
        );
    }

    #[test]
    fn verify_is_exact() {
        let key = [7u8; LEN];
        let tag = task_mac(&key, b"task");
        assert!(verify(&tag, &tag));
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!verify(&tag, &bad));
        assert!(!verify(&tag, &tag[..31]));
        assert!(!verify(&tag, b""));
        assert_ne!(tag, shuffle_read_mac(&key, b"task"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            ClusterSecret::new("short").expect_err("too short"),
            WeakSecret
        );
        assert!(ClusterSecret::new("   0123456789abcdef  ").is_ok());
    }
}
