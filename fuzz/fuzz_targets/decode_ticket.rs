//! Whatever bytes arrive as a DoGet ticket, a control-plane request or a statement handle:
//! decoding and MAC checking never panic (nor taking runtime filter keys in), nor does decoding the Arrow IPC parameters a handle
//! carries.
#![no_main]

use floe_coordinator::flight_sql::handles::decode_parameters;
use floe_proto::auth::{self, ClusterSecret};
use floe_proto::{
    floe_ticket::Kind, FloeTicket, HeartbeatRequest, RegisterRequest, RuntimeFilterKeys,
    ShuffleRead, StatementHandle, TaskDefinition,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let secret = ClusterSecret::new("fuzzing-cluster-secret").expect("long enough");
    let session = secret.session_key(b"nc", b"ne", "executor-1");
    let shuffle = secret.shuffle_key();
    if let Ok(ticket) = FloeTicket::decode(data) {
        match ticket.kind {
            Some(Kind::Task(signed)) => {
                let _ = auth::verify(&auth::task_mac(&session, &signed.body), &signed.mac);
                if let Ok(task) = TaskDefinition::decode(signed.body.as_slice()) {
                    for group in task.files.iter() {
                        for file in &group.files {
                            let _ = file.path.len() + file.deletes.len();
                        }
                    }
                }
            }
            Some(Kind::ShuffleRead(signed)) => {
                let _ = auth::verify(&auth::shuffle_read_mac(&shuffle, &signed.body), &signed.mac);
                let _ = ShuffleRead::decode(signed.body.as_slice());
            }
            Some(Kind::RuntimeFilter(signed)) => {
                let _ = auth::verify(
                    &auth::runtime_filter_mac(&shuffle, &signed.body),
                    &signed.mac,
                );
                if let Ok(keys) = RuntimeFilterKeys::decode(signed.body.as_slice()) {
                    // What an executor does with keys whose MAC matched: decode their IPC
                    // stream (bounded) into its registry.
                    let _ = floe_engine::runtime_filter::receive(keys);
                }
            }
            None => {}
        }
    }
    if let Ok(handle) = StatementHandle::decode(data) {
        let _ = decode_parameters(&handle.parameters);
    }
    let _ = decode_parameters(data);
    if let Ok(register) = RegisterRequest::decode(data) {
        let proof = secret.register_proof(
            &register.coordinator_nonce,
            &register.executor_nonce,
            &register.executor_id,
            &register.flight_endpoint,
            register.protocol_version,
            register.task_slots,
        );
        let _ = auth::verify(&proof, &register.proof);
    }
    let _ = HeartbeatRequest::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClusterSecret::new(text);
    }
});
