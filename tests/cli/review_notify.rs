//! Review notifications (issue #26), with real processes on SQLite and PostgreSQL: a run's
//! notification names its escalated proposals and that governance must approve them; an
//! approval that decides a proposal, and a rejection, each reach the webhook once through the
//! outbox (`hypod serve`), with the title linked under `server.public_url`, who decided and
//! the note escaped for Slack; an approval that decides nothing and a refused one send nothing.

use crate::serve::Daemon;
use crate::support::{Hypod, SAMPLE};
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Received = Arc<Mutex<Vec<String>>>;

async fn hook(State(received): State<Received>, body: axum::Json<serde_json::Value>) {
    let text = body.0["text"].as_str().unwrap_or_default().to_string();
    received.lock().expect("hook").push(text);
}

fn reviews_are_announced_once(url: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let received: Received = Arc::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the webhook");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(received.clone());
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let hypod = Hypod::new();
    let config = format!(
        "[database]\nurl = \"{}\"\n[governance]\npolicies = \"{}\"\n\
         [schedule]\ncron = \"0 0 3 1 1 *\"\nmissed = \"skip\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://hypod.example.com\"\n\
         [notify]\nwebhook_url = \"http://{addr}/hook\"\nretry_seconds = 1\n",
        url.unwrap_or("sqlite://hypod.db"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
    );
    std::fs::write(hypod.path().join("hypod.toml"), config).expect("config");
    hypod.ok(&["import", SAMPLE]);
    let run = hypod.ok(&["run", "--json"]).json();
    let run_id = run["run"]["id"].as_str().expect("run id").to_string();
    let rita = hypod.token("rita", "reviewer");
    let gus = hypod.token("gus", "governance");

    let list = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json();
    let pending = list.as_array().expect("a list");
    let escalates = |p: &&serde_json::Value| {
        p["failed_rules"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["effect"] == "escalate"))
    };
    let escalated: Vec<&serde_json::Value> = pending.iter().filter(escalates).collect();
    assert!(
        !escalated.is_empty(),
        "the sample gives an escalated proposal"
    );
    let plain: Vec<&serde_json::Value> = pending
        .iter()
        .filter(|p| !escalates(p) && p["approvals_required"] == 1)
        .collect();
    assert!(plain.len() >= 2, "two proposals one approval decides");
    let id = |p: &serde_json::Value| p["id"].as_str().expect("id").to_string();
    // The message lists escalated proposals by id: the first is always named.
    let held = escalated.iter().map(|p| id(p)).min().expect("escalated");
    let (approved, rejected) = (id(plain[0]), id(plain[1]));
    let title = plain[0]["title"].as_str().expect("title").to_string();

    // Decides it: one notification.
    hypod.ok(&[
        "queue", "approve", &approved, "--as", "rita", "--note", "ship it",
    ]);
    // Refused (already approved): nothing.
    let twice = hypod.run(&["queue", "approve", &approved, "--as", "gus"]);
    assert_ne!(twice.code, Some(0), "a second approval is refused");
    assert!(twice.stderr.contains("is approved"), "{}", twice.stderr);
    // One of two approvals, governance still missing: decides nothing, sends nothing.
    hypod.ok(&["queue", "approve", &held, "--as", "rita"]);
    // A rejection: one notification, its reason escaped for Slack.
    hypod.ok(&[
        "queue",
        "reject",
        &rejected,
        "--as",
        "gus",
        "--reason",
        "<!channel> too small & too late",
    ]);
    assert!(
        received.lock().expect("hook").is_empty(),
        "sent by the daemon only"
    );

    let daemon = Daemon::spawn(&hypod, &[]);
    let started = Instant::now();
    while received.lock().expect("hook").len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no deliveries");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Long enough for anything sent twice, or sent for the refused review, to arrive.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(daemon.terminate(), Some(0));

    let texts = received.lock().expect("hook").clone();
    assert_eq!(
        texts.len(),
        3,
        "the run, the approval, the rejection: {texts:#?}"
    );
    let find =
        |needle: &str| -> Vec<&String> { texts.iter().filter(|t| t.contains(needle)).collect() };

    let runs = find(&run_id);
    assert_eq!(runs.len(), 1, "{texts:#?}");
    let run_text = runs[0];
    let section = run_text
        .split("\nNeeds governance approval:")
        .nth(1)
        .unwrap_or_else(|| panic!("the run names what needs governance: {run_text}"));
    assert!(
        section.contains(&format!("<https://hypod.example.com/ui/proposals/{held}|")),
        "{run_text}"
    );
    assert!(section.contains("one from governance"), "{run_text}");

    let approvals = find(&format!(
        "proposal {approved} approved by rita (reviewer): "
    ));
    assert_eq!(approvals.len(), 1, "{texts:#?}");
    assert!(
        approvals[0].contains(&format!(
            "<https://hypod.example.com/ui/proposals/{approved}|{title}>"
        )),
        "{}",
        approvals[0]
    );
    assert!(
        approvals[0].ends_with("\nNote: ship it"),
        "{}",
        approvals[0]
    );

    let rejections = find(&format!(
        "proposal {rejected} rejected by gus (governance): "
    ));
    assert_eq!(rejections.len(), 1, "{texts:#?}");
    assert!(
        rejections[0].contains(&format!("/ui/proposals/{rejected}|")),
        "{}",
        rejections[0]
    );
    assert!(
        rejections[0].ends_with("\nReason: &lt;!channel&gt; too small &amp; too late"),
        "{}",
        rejections[0]
    );
    // The partial approval and the refused one sent nothing of their own; no secret is sent.
    assert!(find(&format!("proposal {held} ")).is_empty(), "{texts:#?}");
    assert!(find("approved by gus").is_empty(), "{texts:#?}");
    for text in &texts {
        assert!(!text.contains(&rita) && !text.contains(&gus), "{text}");
        assert!(!text.contains("/hook"), "{text}");
    }
}

#[test]
fn reviews_are_announced_once_on_sqlite() {
    reviews_are_announced_once(None);
}

#[test]
fn reviews_are_announced_once_on_postgresql() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let checked = std::panic::catch_unwind(|| reviews_are_announced_once(Some(&db.url)));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}
