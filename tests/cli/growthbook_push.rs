//! Approved proposals pushed to GrowthBook (`[export.growthbook]`) against the strict fake of
//! `tests/fake_growthbook` (its `POST /api/v1/experiments` checks each body against
//! GrowthBook's documented schema and runtime rules), on every backend: `hypod serve` with
//! `push_on_approval` pushes the sample's approved proposals, each once — across a lost answer
//! (created, never answered: the retry meets the duplicate key and the experiment is read back)
//! and a restart; a refused one shows GrowthBook's message in `queue show` and on its page;
//! `export --format growthbook` writes bodies the fake accepts; `export --push` does the same
//! by hand through the same outbox; the configuration is checked at load; the API key appears
//! in no output, log, page or stored error.

use crate::backends::{on_every_backend, TestDb};
use crate::fake_growthbook::{
    validate_post, FakeGrowthbook, RetryAfter, Route, ASSIGNMENT_QUERY, CONVERSIONS, DATASOURCE,
    ORDERS, PROJECT,
};
use crate::support::{Hypod, Ran, SAMPLE};
use crate::test_app::request;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "gbk_push_7c1e93a0d5f24b68";
const KEY_ENV: &str = "GB_PUSH_KEY";
/// A schedule that never fires during a test.
const NEVER: &str = "0 0 3 1 1 *";

/// `[export.growthbook]` for the fake, with the owners mapped (ada to someone GrowthBook does
/// not know).
fn export_table(fake: &FakeGrowthbook, push_on_approval: bool, ada: &str) -> String {
    format!(
        "\n[export.growthbook]\nurl = \"{}\"\napi_key_env = \"{KEY_ENV}\"\nproject = \"{PROJECT}\"\n\
         datasource_id = \"{DATASOURCE}\"\nassignment_query_id = \"{ASSIGNMENT_QUERY}\"\n\
         push_on_approval = {push_on_approval}\nretry_seconds = 1\nhold_seconds = 4\n\
         [export.growthbook.metrics]\nconversion_rate = \"{CONVERSIONS}\"\n\
         repeat_purchase_rate = \"{ORDERS}\"\n\
         [export.growthbook.owners]\nrita = \"rita@shop.example\"\ngus = \"u_gus\"\nada = \"{ada}\"\n",
        fake.url()
    )
}

/// A hypod folder on `url` with the sample imported, one run, tokens for rita (reviewer), gus
/// (governance) and ada (admin), and `table` appended to its configuration.
fn site(url: &str, table: &str) -> (Hypod, Vec<(&'static str, String)>) {
    let hypod = Hypod::with_database(url);
    let path = hypod.path().join("hypod.toml");
    let mut config = std::fs::read_to_string(&path).expect("the configuration");
    config.push_str(table);
    std::fs::write(&path, config).expect("write the configuration");
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let tokens = ["rita:reviewer", "gus:governance", "ada:admin"]
        .iter()
        .map(|pair| {
            let (user, role) = pair.split_once(':').expect("user:role");
            let user: &'static str = match user {
                "rita" => "rita",
                "gus" => "gus",
                _ => "ada",
            };
            (user, hypod.token(user, role))
        })
        .collect();
    (hypod, tokens)
}

fn token<'a>(tokens: &'a [(&'static str, String)], user: &str) -> &'a str {
    &tokens.iter().find(|(u, _)| *u == user).expect("a token").1
}

/// Pending proposals: (id, escalated?).
fn pending(hypod: &Hypod) -> Vec<(String, bool)> {
    hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let escalated = p["failed_rules"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["effect"] == "escalate"));
            (p["id"].as_str().expect("id").to_string(), escalated)
        })
        .collect()
}

/// A command with the API key in its environment.
fn with_key(hypod: &Hypod, args: &[&str]) -> Ran {
    Ran::of(
        hypod
            .command(args)
            .env(KEY_ENV, KEY)
            .output()
            .expect("run hypod"),
    )
}

fn push_of(hypod: &Hypod, id: &str) -> Value {
    hypod.ok(&["queue", "show", id, "--json"]).json()["push"].clone()
}

/// Waits (at most a minute) until none of `ids`' pushes is pending; their pushes.
fn settled(hypod: &Hypod, ids: &[String]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let pushes: Vec<Value> = ids.iter().map(|id| push_of(hypod, id)).collect();
        if pushes
            .iter()
            .all(|p| p["state"] == "pushed" || p["state"] == "refused")
        {
            return pushes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pushes still pending after a minute: {pushes:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `hypod serve` child with the API key, its log kept; killed when dropped.
struct Daemon {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn spawn(hypod: &Hypod) -> Daemon {
        let mut child = hypod
            .command(&["serve"])
            .env(KEY_ENV, KEY)
            .env("HYPOD_LOG", "info")
            .env("HYPOD_SCHEDULE__CRON", NEVER)
            .env("HYPOD_SCHEDULE__MISSED", "skip")
            .env("HYPOD_SERVER__LISTEN", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start hypod serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let addr = line.rsplit("http://").next().unwrap_or("").trim();
                        let _ = tx.send(addr.to_string());
                    }
                }
                kept.lock().expect("log").push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("hypod serve did not start: {:?}", log.lock().expect("log"));
        };
        Daemon { child, addr, log }
    }

    /// SIGTERM, then its whole log.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "hypod serve did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().expect("log").join("\n")
    }

    fn approve(&self, id: &str, token: &str) {
        let answer = request(
            &self.addr,
            "POST",
            &format!("/api/v1/proposals/{id}/approve"),
            &[("Authorization", &format!("Bearer {token}"))],
            Some(("application/json", r#"{"note":"ship it as a draft"}"#)),
        );
        assert_eq!(answer.status, 200, "approve {id}: {}", answer.body);
    }

    fn page(&self, id: &str, token: &str) -> String {
        let answer = request(
            &self.addr,
            "GET",
            &format!("/ui/proposals/{id}"),
            &[("Cookie", &format!("hypod_token={token}"))],
            None,
        );
        assert_eq!(answer.status, 200, "page {id}: {}", answer.body);
        answer.body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Approves `id` through the daemon: governance first when escalated, then `last` (whose
/// approval makes it approved and whose mapped member becomes the owner).
fn approve(
    daemon: &Daemon,
    tokens: &[(&'static str, String)],
    (id, escalated): &(String, bool),
    last: &str,
) {
    if *escalated && last != "gus" {
        daemon.approve(id, token(tokens, "gus"));
    }
    daemon.approve(id, token(tokens, last));
}

fn tracking_keys(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            b["trackingKey"]
                .as_str()
                .expect("a tracking key")
                .to_string()
        })
        .collect()
}

/// `hypod serve` with `push_on_approval`: every approved proposal of the sample created once
/// as a draft (the strict fake accepts every body); the first answer lost, the retry meets the
/// duplicate key and the experiment read back is recorded once; a refused owner shown with
/// GrowthBook's message in `queue show` and on the page; nothing pushed twice after a restart;
/// one audit entry per push; the key nowhere.
async fn serve_pushes_each_approved_proposal_once(db: Arc<TestDb>) {
    let fake = Arc::new(FakeGrowthbook::start(KEY, Vec::new()).await);
    let url = db.url.clone();
    let shared = fake.clone();
    tokio::task::spawn_blocking(move || {
        let fake = shared;
        let (hypod, tokens) = site(&url, &export_table(&fake, true, "ada@nowhere.example"));
        let mut queue = pending(&hypod);
        assert!(queue.len() >= 4, "the sample queues enough: {queue:?}");
        let late = queue.pop().expect("one for after the restart");
        let refused = queue
            .iter()
            .position(|(_, escalated)| !escalated)
            .map(|i| queue.remove(i))
            .expect("a proposal one reviewer may approve");
        // The first creation is made but its answer never arrives.
        fake.lose_answers(1);
        let daemon = Daemon::spawn(&hypod);
        for proposal in &queue {
            approve(&daemon, &tokens, proposal, "rita");
        }
        approve(&daemon, &tokens, &refused, "ada");
        let mut approved: Vec<String> = queue.iter().map(|(id, _)| id.clone()).collect();
        approved.push(refused.0.clone());
        let pushes = settled(&hypod, &approved);

        // Every pushed one created once, with its id and URL stored.
        let created = fake.created();
        assert_eq!(created.len(), queue.len(), "{created:?}");
        for body in &created {
            validate_post(body).expect("a body GrowthBook's schema accepts");
            assert_eq!(body["status"], "draft");
        }
        let keys: BTreeSet<String> = tracking_keys(&created).into_iter().collect();
        let expected: BTreeSet<String> =
            queue.iter().map(|(id, _)| format!("hypod-{id}")).collect();
        assert_eq!(
            keys, expected,
            "each approved proposal once, by its tracking key"
        );
        for (id, push) in approved.iter().zip(&pushes) {
            if *id == refused.0 {
                continue;
            }
            assert_eq!(push["state"], "pushed", "{id}: {push}");
            let experiment = push["experiment_id"].as_str().expect("an experiment id");
            assert!(experiment.starts_with("exp_new_"), "{push}");
            assert_eq!(
                push["experiment_url"],
                format!("{}/experiment/{experiment}", fake.url())
            );
        }
        // The outbox as an operator's scrape sees it: every push settled, none waiting.
        let metrics = request(&daemon.addr, "GET", "/metrics", &[], None).body;
        for line in [
            format!("hypod_pushes{{state=\"pushed\"}} {}", queue.len()),
            "hypod_pushes{state=\"refused\"} 1".to_string(),
            "hypod_pushes{state=\"pending\"} 0".to_string(),
            "hypod_push_oldest_pending_seconds 0".to_string(),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} not in\n{metrics}"
            );
        }
        // The lost answer: its retry was told the key exists, and the experiment read back.
        let refusals = fake.refused();
        let duplicates: Vec<&(Value, String)> = refusals
            .iter()
            .filter(|(_, m)| m.starts_with("Experiment with tracking key already exists"))
            .collect();
        assert_eq!(duplicates.len(), 1, "{refusals:?}");
        let lost_key = duplicates[0].0["trackingKey"].as_str().expect("a key");
        let lost_id = lost_key.trim_start_matches("hypod-");
        let lost = push_of(&hypod, lost_id);
        assert_eq!(lost["state"], "pushed", "{lost}");
        assert_eq!(
            lost["experiment_id"], "exp_new_00001",
            "the one created first"
        );
        assert!(lost["attempts"].as_i64() >= Some(2), "{lost}");

        // The refused owner: GrowthBook's message on the proposal, in `queue show` and the page.
        let unknown = "Unable to find user: ada@nowhere.example";
        assert!(refusals.iter().any(|(_, m)| m == unknown), "{refusals:?}");
        let push = push_of(&hypod, &refused.0);
        assert_eq!(push["state"], "refused", "{push}");
        assert_eq!(push["http_status"], 400);
        assert_eq!(push["error"], unknown);
        let shown = hypod.ok(&["queue", "show", &refused.0]).stdout;
        assert!(
            shown.contains(&format!("growthbook   refused (400): {unknown}")),
            "{shown}"
        );
        let page = daemon.page(&refused.0, token(&tokens, "rita"));
        assert!(page.contains(unknown), "{page}");
        let pushed_page = daemon.page(&queue[0].0, token(&tokens, "rita"));
        assert!(pushed_page.contains("pushed as draft"), "{pushed_page}");
        let posts = fake.count(Route::Create);
        assert_eq!(posts as usize, created.len() + refusals.len());
        let first_log = daemon.stop();

        // After a restart: nothing posted again; the one approved now is pushed once.
        let daemon = Daemon::spawn(&hypod);
        approve(&daemon, &tokens, &late, "rita");
        let after = settled(&hypod, std::slice::from_ref(&late.0));
        assert_eq!(after[0]["state"], "pushed", "{after:?}");
        assert_eq!(fake.created().len(), created.len() + 1);
        assert_eq!(
            fake.count(Route::Create),
            posts + 1,
            "only the new one posted"
        );
        assert_eq!(fake.refused().len(), refusals.len());
        let second_log = daemon.stop();

        // One audit entry per push; the log verifies.
        hypod.ok(&["audit", "verify"]);
        let audit = hypod.ok(&["audit", "export"]).json_lines();
        let entries = audit.as_array().expect("entries");
        let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
        assert_eq!(count("push.delivered"), created.len() + 1);
        assert_eq!(count("push.refused"), 1);

        // The key: in no log, output, page or stored error.
        let outputs = [
            first_log,
            second_log,
            shown,
            page,
            pushed_page,
            hypod.ok(&["audit", "export"]).stdout,
            hypod.ok(&["queue", "show", lost_id, "--json"]).stdout,
            hypod.ok(&["queue", "list", "--json"]).stdout,
        ];
        for text in &outputs {
            assert!(!text.contains(KEY), "the API key leaked: {text}");
        }
    })
    .await
    .expect("the check");
}

/// `export --format growthbook` writes bodies the strict fake accepts, and `export --push`
/// pushes by hand through the same outbox: once each, a refused one tried again only by hand
/// (and created once the owner is fixed), nothing posted twice, the key required.
async fn export_push_by_hand_is_once_only(db: Arc<TestDb>) {
    let fake = Arc::new(FakeGrowthbook::start(KEY, Vec::new()).await);
    let url = db.url.clone();
    let shared = fake.clone();
    tokio::task::spawn_blocking(move || {
        let fake = shared;
        let (hypod, _tokens) = site(&url, &export_table(&fake, false, "ada@nowhere.example"));
        let plain: Vec<String> = pending(&hypod)
            .into_iter()
            .filter(|(_, escalated)| !escalated)
            .map(|(id, _)| id)
            .collect();
        assert!(plain.len() >= 2, "{plain:?}");
        hypod.ok(&["queue", "approve", &plain[0], "--as", "rita"]);
        hypod.ok(&["queue", "approve", &plain[1], "--as", "ada"]);
        // Without push_on_approval nothing was queued.
        assert_eq!(push_of(&hypod, &plain[0]), Value::Null);

        let drafts = hypod.ok(&["export", "--format", "growthbook"]).json();
        let drafts = drafts.as_array().expect("an array of bodies");
        assert_eq!(drafts.len(), 2);
        for draft in drafts {
            validate_post(draft).unwrap_or_else(|e| panic!("{e}: {draft}"));
            assert_eq!(draft["status"], "draft");
            assert_eq!(draft["assignmentQueryId"], ASSIGNMENT_QUERY);
            assert_eq!(draft["datasourceId"], DATASOURCE);
            assert_eq!(draft["project"], PROJECT);
            assert_eq!(draft["variations"].as_array().map(Vec::len), Some(2));
            assert_eq!(draft["tags"][0], "hypod");
            assert!(draft["description"]
                .as_str()
                .unwrap()
                .contains("Rollback plan:"));
        }
        let by_key = |id: &str| {
            drafts
                .iter()
                .find(|d| d["trackingKey"] == format!("hypod-{id}"))
                .unwrap_or_else(|| panic!("a draft of {id}"))
        };
        assert_eq!(by_key(&plain[0])["owner"], "rita@shop.example");
        assert_eq!(by_key(&plain[0])["metrics"][0], CONVERSIONS);
        // Nothing was sent by export itself.
        assert_eq!(fake.count(Route::Create), 0);

        // By hand: the one approved by rita created, ada's refused with GrowthBook's message.
        let first = with_key(&hypod, &["export", "--push"]);
        assert_eq!(first.code, Some(1), "{}\n{}", first.stdout, first.stderr);
        assert!(
            first.stdout.contains(&format!(
                "{}  growthbook   pushed as exp_new_00001",
                plain[0]
            )),
            "{}",
            first.stdout
        );
        assert!(
            first
                .stdout
                .contains("refused (400): Unable to find user: ada@nowhere.example"),
            "{}",
            first.stdout
        );
        assert_eq!(fake.created().len(), 1);
        assert_eq!(fake.count(Route::Create), 2);
        // Again: the refused one is tried again (it created nothing), the pushed one is not.
        let again = with_key(&hypod, &["export", "--push", "--json"]);
        assert_eq!(again.code, Some(1), "{}", again.stderr);
        let report = again.json();
        assert_eq!(report["pushes"].as_array().map(Vec::len), Some(2));
        assert_eq!(fake.count(Route::Create), 3);
        assert_eq!(fake.created().len(), 1);

        // The owner fixed: created; then nothing left to post.
        let path = hypod.path().join("hypod.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, config.replace("ada@nowhere.example", "u_gus")).unwrap();
        let fixed = with_key(&hypod, &["export", "--push"]);
        assert_eq!(fixed.code, Some(0), "{}\n{}", fixed.stdout, fixed.stderr);
        assert_eq!(fake.created().len(), 2);
        assert_eq!(fake.created()[1]["owner"], "u_gus");
        let posts = fake.count(Route::Create);
        let idle = with_key(&hypod, &["export", "--push"]);
        assert_eq!(idle.code, Some(0), "{}", idle.stderr);
        assert_eq!(fake.count(Route::Create), posts, "nothing posted twice");
        let shown = hypod.ok(&["queue", "show", &plain[1]]).stdout;
        assert!(
            shown.contains("growthbook   pushed as exp_new_00002"),
            "{shown}"
        );

        // Without the key: refused before anything is sent, naming the variable.
        let keyless = hypod.run(&["export", "--push"]);
        assert_eq!(keyless.code, Some(2), "{}", keyless.stderr);
        assert!(keyless.stderr.contains(KEY_ENV), "{}", keyless.stderr);
        for text in [&first.stdout, &first.stderr, &again.stdout, &fixed.stdout] {
            assert!(!text.contains(KEY), "the API key leaked: {text}");
        }
        hypod.ok(&["audit", "verify"]);
    })
    .await
    .expect("the check");
}

/// A busy GrowthBook (`503`) is retried with backoff and each push still lands once; a draft
/// edited after its approval queued its push is refused without being sent. Approval from the
/// shell queues pushes too.
async fn a_busy_growthbook_is_retried_and_an_edited_draft_is_never_sent(db: Arc<TestDb>) {
    let fake = Arc::new(FakeGrowthbook::start(KEY, Vec::new()).await);
    let url = db.url.clone();
    let shared = fake.clone();
    let (hypod, plain) = tokio::task::spawn_blocking(move || {
        let (hypod, _tokens) = site(&url, &export_table(&shared, true, "u_gus"));
        let plain: Vec<String> = pending(&hypod)
            .into_iter()
            .filter(|(_, escalated)| !escalated)
            .map(|(id, _)| id)
            .take(3)
            .collect();
        assert_eq!(plain.len(), 3, "{plain:?}");
        for id in &plain {
            hypod.ok(&["queue", "approve", id, "--as", "rita"]);
            assert_eq!(
                push_of(&hypod, id)["state"],
                "pending",
                "queued by the approval"
            );
        }
        (hypod, plain)
    })
    .await
    .expect("the setup");
    // The third draft edited under hypod's back after its approval queued the push.
    let edit = if db.backend == "sqlite" {
        format!(
            "UPDATE proposals SET body = json_set(body, '$.draft.change', 'show the diagnosis') \
             WHERE id = '{}'",
            plain[2]
        )
    } else {
        format!(
            "UPDATE proposals SET body = jsonb_set(body, '{{draft,change}}', '\"show the diagnosis\"') \
             WHERE id = '{}'",
            plain[2]
        )
    };
    db.execute(Box::leak(edit.into_boxed_str())).await;
    fake.fail_next(2);
    let shared = fake.clone();
    tokio::task::spawn_blocking(move || {
        let fake = shared;
        let first = with_key(&hypod, &["export", "--push"]);
        assert_eq!(first.code, Some(1), "{}\n{}", first.stdout, first.stderr);
        assert!(
            first
                .stdout
                .contains("push pending after 1 attempt(s) (503)"),
            "{}",
            first.stdout
        );
        assert!(
            first
                .stderr
                .contains(&format!("withheld proposal {}", plain[2])),
            "{}",
            first.stderr
        );
        // Retried (after the backoff) until both land.
        let started = Instant::now();
        while [&plain[0], &plain[1]]
            .iter()
            .any(|id| push_of(&hypod, id)["state"] != "pushed")
        {
            assert!(started.elapsed() < Duration::from_secs(60), "never pushed");
            std::thread::sleep(Duration::from_millis(300));
            with_key(&hypod, &["export", "--push"]);
        }
        assert_eq!(fake.server_errors(), 2);
        let keys = tracking_keys(&fake.created());
        let expected = [format!("hypod-{}", plain[0]), format!("hypod-{}", plain[1])];
        assert_eq!(keys.len(), 2, "each once: {keys:?}");
        assert_eq!(
            keys.into_iter().collect::<BTreeSet<_>>(),
            expected.into_iter().collect::<BTreeSet<_>>(),
            "the edited one never"
        );
        let edited = push_of(&hypod, &plain[2]);
        assert_eq!(edited["state"], "refused", "{edited}");
        assert!(
            edited["error"]
                .as_str()
                .unwrap()
                .contains("may not leave hypod"),
            "{edited}"
        );
        assert_eq!(edited["http_status"], Value::Null);
        assert!(fake
            .refused()
            .iter()
            .all(|(body, _)| body["trackingKey"] != format!("hypod-{}", plain[2])));
        let audit = hypod.ok(&["audit", "export"]).json_lines();
        let refused: Vec<&Value> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "push.refused")
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["subject"], plain[2].as_str());
    })
    .await
    .expect("the check");
}

/// A rate-limited GrowthBook (`429` with `Retry-After` as an HTTP date, one request per 5 s
/// window) is waited out as it asks: the push that met the `429` stays pending with that
/// status, is not sent again before the date however often `export --push` runs, and then lands
/// once.
async fn a_rate_limited_growthbook_is_waited_out_as_retry_after_says(db: Arc<TestDb>) {
    let fake = Arc::new(FakeGrowthbook::start(KEY, Vec::new()).await);
    let url = db.url.clone();
    let shared = fake.clone();
    tokio::task::spawn_blocking(move || {
        let fake = shared;
        let (hypod, _tokens) = site(&url, &export_table(&fake, true, "u_gus"));
        let plain: Vec<String> = pending(&hypod)
            .into_iter()
            .filter(|(_, escalated)| !escalated)
            .map(|(id, _)| id)
            .take(2)
            .collect();
        assert_eq!(plain.len(), 2, "{plain:?}");
        for id in &plain {
            hypod.ok(&["queue", "approve", id, "--as", "rita"]);
        }
        fake.rate_limit(1, Duration::from_secs(5), RetryAfter::HttpDate);
        let started = Instant::now();
        let first = with_key(&hypod, &["export", "--push"]);
        assert_eq!(first.code, Some(1), "{}\n{}", first.stdout, first.stderr);
        assert!(
            first
                .stdout
                .contains("push pending after 1 attempt(s) (429)"),
            "{}",
            first.stdout
        );
        assert_eq!(fake.rate_limited(), 1);
        let waiting: Vec<Value> = plain
            .iter()
            .map(|id| push_of(&hypod, id))
            .filter(|p| p["state"] == "pending")
            .collect();
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert_eq!(waiting[0]["http_status"], 429, "{}", waiting[0]);
        while plain
            .iter()
            .any(|id| push_of(&hypod, id)["state"] != "pushed")
        {
            assert!(started.elapsed() < Duration::from_secs(60), "never pushed");
            std::thread::sleep(Duration::from_millis(300));
            with_key(&hypod, &["export", "--push"]);
        }
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "pushed {:?} after the 429",
            started.elapsed()
        );
        assert_eq!(
            fake.too_early(),
            0,
            "a request came before Retry-After's date"
        );
        assert_eq!(fake.rate_limited(), 1);
        let keys = tracking_keys(&fake.created());
        assert_eq!(keys.len(), 2, "each once: {keys:?}");
    })
    .await
    .expect("the check");
}

on_every_backend!(
    serve_pushes_each_approved_proposal_once,
    export_push_by_hand_is_once_only,
    a_busy_growthbook_is_retried_and_an_edited_draft_is_never_sent,
    a_rate_limited_growthbook_is_waited_out_as_retry_after_says
);

/// `[export.growthbook]` is checked at load: each mistake refused with exit 2, naming the key.
#[test]
fn the_growthbook_export_table_is_checked_at_load_naming_the_key() {
    let base = "[export.growthbook]\nurl = \"https://api.growthbook.io\"\napi_key_env = \"GB_KEY\"\nassignment_query_id = \"aq\"\n";
    let cases: [(&str, &str); 7] = [
        ("url = \"https://api.growthbook.io\"", "url = \"ftp://gb\""),
        ("api_key_env = \"GB_KEY\"", "api_key_env = \"HYPOD_GB\""),
        ("api_key_env = \"GB_KEY\"", "api_key_env = \"gbk-1234 XYZZY\""),
        ("assignment_query_id = \"aq\"", "assignment_query_id = \" \""),
        (
            "assignment_query_id = \"aq\"",
            "assignment_query_id = \"aq\"\n[export.growthbook.metrics]\nconversion_rate = \"met_c\"",
        ),
        ("assignment_query_id = \"aq\"", "assignment_query_id = \"aq\"\nprojekt = \"p\""),
        (
            "assignment_query_id = \"aq\"",
            "assignment_query_id = \"aq\"\n[export.growthbook.owners]\nrita = \"\"",
        ),
    ];
    let keys = [
        "export.growthbook.url",
        "export.growthbook.api_key_env",
        "export.growthbook.api_key_env",
        "export.growthbook.assignment_query_id",
        "export.growthbook.datasource_id",
        "projekt",
        "export.growthbook.owners.rita",
    ];
    for ((from, to), key) in cases.iter().zip(keys) {
        let hypod = Hypod::new();
        let path = hypod.path().join("hypod.toml");
        let mut config = std::fs::read_to_string(&path).unwrap();
        config.push_str(&base.replace(from, to));
        std::fs::write(&path, config).unwrap();
        let ran = hypod.run(&["export", "--format", "growthbook"]);
        assert_eq!(ran.code, Some(2), "{to}: {}", ran.stderr);
        assert!(ran.stderr.contains(key), "{to}: {}", ran.stderr);
        assert!(!ran.stderr.contains("XYZZY"), "{}", ran.stderr);
        assert!(!hypod.path().join("hypod.db").exists(), "nothing opened");
    }
    // Pushing on approval without the key: the daemon does not start, and says which variable.
    let hypod = Hypod::new();
    let path = hypod.path().join("hypod.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!("{base}push_on_approval = true\n"));
    std::fs::write(&path, config).unwrap();
    let serve = Ran::of(
        hypod
            .command(&["serve"])
            .env("HYPOD_SERVER__LISTEN", "127.0.0.1:0")
            .env_remove("GB_KEY")
            .output()
            .expect("run hypod serve"),
    );
    assert_eq!(serve.code, Some(2), "{}", serve.stderr);
    assert!(
        serve.stderr.contains("GB_KEY") && serve.stderr.contains("export.growthbook.api_key_env"),
        "{}",
        serve.stderr
    );
    // Not configured: the GrowthBook format says what to add.
    let hypod = Hypod::new();
    hypod.import_sample();
    let ran = hypod.run(&["export", "--format", "growthbook"]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("export.growthbook"), "{}", ran.stderr);
}
