//! What several benches set up alike: the audit key, numbers from the environment, a proposal
//! queued as a run queues it, and `hypod serve` started on a configuration (its address read
//! from its log). Included by path (`#[path = "support/mod.rs"] mod support;`); a bench uses
//! what it needs.
#![allow(dead_code)]

use hypod::app::App;
use hypod::domain::{
    Enrichment, Proposal, ProposalDraft, ProposalStatus, Provenance, RunRecord, RunStatus,
    RunSummary, Trigger,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The audit key every bench's database is keyed with (also given to `hypod serve`).
pub const KEY: &str = "bench-audit-key-0123456789";

/// The audit key as the store takes it.
pub fn audit_key() -> hypod::store::AuditKey {
    hypod::store::AuditKey::new(KEY.as_bytes()).expect("the bench's audit key")
}

/// A whole number from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The draft of `tests/fixtures/draft.json`.
pub fn draft() -> ProposalDraft {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/draft.json"
    ))
    .expect("the draft fixture");
    serde_json::from_str(&text).expect("a draft")
}

/// A succeeded CLI run's record, dated now, that proposals can be recorded with.
pub fn run_record() -> RunRecord {
    let now = chrono::Utc::now();
    RunRecord {
        id: uuid::Uuid::now_v7().to_string(),
        trigger: Trigger::Cli,
        status: RunStatus::Succeeded,
        started_at: now,
        finished_at: now,
        proposer: "bench".into(),
        fell_back: None,
        error: None,
        summary: RunSummary::default(),
        usage: None,
        policy_digest: "p".repeat(64),
        input_digest: "i".repeat(64),
        rejected_drafts: Vec::new(),
        notes: Vec::new(),
        audit_head: None,
        stage_seconds: Vec::new(),
    }
}

/// One pending proposal citing `evidence`, queued as a run would queue it: its id.
pub async fn queue_proposal(app: &App, evidence: &str) -> String {
    let mut draft = draft();
    for cited in &mut draft.evidence {
        cited.experiment_id = evidence.to_string();
    }
    let run = run_record();
    let proposal = Proposal {
        id: uuid::Uuid::now_v7().to_string(),
        run_id: run.id.clone(),
        status: ProposalStatus::PendingReview,
        created_at: run.started_at,
        updated_at: run.started_at,
        draft,
        enrichment: Enrichment::default(),
        verdicts: Vec::new(),
        provenance: Provenance {
            proposer: "bench".into(),
            ..Provenance::default()
        },
        approvals_required: 1,
        superseded_by: None,
    };
    let id = proposal.id.clone();
    app.store()
        .await
        .expect("the store")
        .record_run(&run, &[proposal], &[], None, None)
        .await
        .expect("queue a proposal");
    id
}

/// `hypod serve` on the configuration at `config_path`, keyed with [`KEY`]: the child and the
/// address it listens on. Its later log lines are drained so it never blocks on them.
pub fn serve(config_path: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hypod"))
        .arg("serve")
        .env("HYPOD_CONFIG", config_path)
        .env("HYPOD_AUDIT_KEY", KEY)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hypod serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on http://") => {
                break line
                    .rsplit("http://")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            }
            Some(Ok(line)) => eprintln!("hypod serve: {line}"),
            other => panic!("hypod serve did not start: {other:?}"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Runs `measure` on a fresh PostgreSQL database (its URL) made on the server of
/// `HYPOD_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres) with `psql`,
/// and drops it after; says so and skips when the server cannot be reached.
pub fn on_fresh_postgres(measure: impl FnOnce(&str)) {
    let server = std::env::var("HYPOD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("hypod_bench_{:08x}", rand::random::<u32>());
    let admin = |sql: String| {
        Command::new("psql")
            .args([server.as_str(), "-qc", sql.as_str()])
            .status()
            .is_ok_and(|s| s.success())
    };
    if admin(format!("CREATE DATABASE {name}")) {
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        measure(&format!("{base}/{name}"));
        admin(format!("DROP DATABASE {name} WITH (FORCE)"));
    } else {
        eprintln!("PostgreSQL not reachable at {server}: its figures are skipped");
    }
}
