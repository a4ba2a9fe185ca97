//! Run notifications through the outbox, with real processes: `hypod run` records two runs
//! (and their outbox rows), `hypod serve` delivers them to a local webhook, retries the one the
//! webhook refused, and a restarted daemon sends nothing twice.

use crate::serve::Daemon;
use crate::support::{Hypod, SAMPLE};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the webhook was sent, and how it answered each time.
#[derive(Default)]
struct Hook {
    received: Vec<(u16, serde_json::Value)>,
}

async fn hook(
    State(hook): State<Arc<Mutex<Hook>>>,
    body: axum::Json<serde_json::Value>,
) -> StatusCode {
    let mut hook = hook.lock().expect("hook");
    // The very first delivery fails, as a webhook that is briefly down.
    let status = if hook.received.is_empty() { 500 } else { 200 };
    hook.received.push((status, body.0));
    StatusCode::from_u16(status).expect("status")
}

#[test]
fn runs_are_announced_once_through_the_outbox_with_retries() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let state = Arc::new(Mutex::new(Hook::default()));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the webhook");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(state.clone());
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let hypod = Hypod::new();
    let config = format!(
        "[database]\nurl = \"sqlite://hypod.db\"\n[governance]\npolicies = \"{}\"\n\
         [schedule]\ncron = \"0 0 3 1 1 *\"\nmissed = \"skip\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://hypod.example.com\"\n\
         [notify]\nwebhook_url = \"http://{addr}/hook\"\nretry_seconds = 1\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
    );
    std::fs::write(hypod.path().join("hypod.toml"), config).expect("config");
    hypod.ok(&["import", SAMPLE]);
    let first = hypod.ok(&["run", "--json"]).json();
    let second = hypod.ok(&["run", "--json"]).json();
    let ids = [
        first["run"]["id"].as_str().expect("run id").to_string(),
        second["run"]["id"].as_str().expect("run id").to_string(),
    ];
    // Nothing is sent by `hypod run` itself: the outbox waits for the daemon.
    assert!(state.lock().expect("hook").received.is_empty());

    let daemon = Daemon::spawn(&hypod, &[]);
    let started = Instant::now();
    while state.lock().expect("hook").received.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no deliveries");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.terminate(), Some(0));
    // A restarted daemon finds nothing left to send.
    let again = Daemon::spawn(&hypod, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(again.terminate(), Some(0));

    let received = &state.lock().expect("hook").received;
    assert_eq!(received.len(), 3, "one refused, then each run once");
    let delivered: Vec<&str> = received
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body["text"].as_str().expect("a Slack text"))
        .collect();
    for id in &ids {
        assert_eq!(
            delivered
                .iter()
                .filter(|text| text.contains(id.as_str()))
                .count(),
            1,
            "run {id}: {delivered:?}"
        );
    }
    let announced = delivered
        .iter()
        .find(|text| text.contains(ids[0].as_str()))
        .expect("the first run");
    assert!(announced.contains("8 queued for review"), "{announced}");
    assert!(
        announced.contains("Top proposals:\n• <https://hypod.example.com/ui/proposals/"),
        "{announced}"
    );
    let quiet = delivered
        .iter()
        .find(|text| text.contains(ids[1].as_str()))
        .expect("the second run");
    assert!(
        quiet.contains("0 queued for review, 0 escalated, 0 blocked, 8 duplicates"),
        "{quiet}"
    );
}
