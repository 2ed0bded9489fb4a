//! An executor started in a process is reached from that process without a socket (as in
//! `floe standalone`), with the same checks as over the network, until it stops.

use std::net::{Ipv4Addr, SocketAddr};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Ticket;
use floe_engine::runtime::{internal_channel, is_in_process, random_nonce};
use floe_engine::status::is_from_executor;
use floe_executor::ExecutorConfig;
use floe_proto::auth::ClusterSecret;
use floe_proto::floe_ticket::Kind;
use floe_proto::{FloeTicket, Signed};
use prost::Message;
use tonic::Code;

/// A task ticket whose MAC no coordinator made.
fn forged_task() -> Ticket {
    let ticket = FloeTicket {
        kind: Some(Kind::Task(Signed {
            body: b"not a task".to_vec(),
            mac: vec![0; 32],
        })),
    };
    Ticket::new(ticket.encode_to_vec())
}

#[tokio::test]
async fn an_executor_of_this_process_is_called_directly_with_its_checks_until_it_stops() {
    let executor = floe_executor::start(ExecutorConfig {
        // Nothing listens there: registration keeps retrying in the background, which this
        // test does not need.
        coordinator_url: "http://127.0.0.1:9".to_string(),
        coordinator_ca: None,
        bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        advertise_host: Ipv4Addr::LOCALHOST.to_string(),
        cluster_secret: ClusterSecret::from_random(random_nonce()),
        storage: Default::default(),
        roots: vec![],
        batch_size: 8192,
        memory_limit: 64 << 20,
        task_slots: 2,
        lookup_cache: 0,
    })
    .await
    .expect("the executor starts");
    let url = format!("http://127.0.0.1:{}", executor.addr.port());
    assert!(is_in_process(&url), "{url} is served in-process");
    assert!(!is_in_process(&format!(
        "http://127.0.0.1:{}",
        executor.addr.port() ^ 1
    )));

    // The executor itself answers, with its own checks: it takes no task before it has
    // registered with a coordinator (nothing listens at this one).
    let channel = internal_channel(&url).expect("channel");
    let refused = FlightServiceClient::new(channel.clone())
        .do_get(forged_task())
        .await
        .expect_err("a task before registration is refused");
    assert!(is_from_executor(&refused), "{refused:?}");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("not registered"), "{refused:?}");

    // Stopped, it answers a channel made before like a connection that finds no server: not
    // from the executor, and a code the scheduler counts as the executor being lost.
    executor.shutdown().await;
    assert!(!is_in_process(&url));
    let lost = FlightServiceClient::new(channel)
        .do_get(forged_task())
        .await
        .expect_err("a stopped executor takes nothing");
    assert!(!is_from_executor(&lost), "{lost:?}");
    assert!(
        matches!(lost.code(), Code::Unavailable | Code::Unknown),
        "{lost:?}"
    );
    assert!(lost.message().contains("has stopped"), "{lost:?}");
}
