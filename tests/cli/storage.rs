//! The storage suite: every check is written once over the `Store` trait and runs on SQLite
//! and on PostgreSQL (`storage::sqlite::*`, `storage::postgres::*`; see `backends` for how the
//! databases are made and when the PostgreSQL ones are skipped).

use crate::backends::{on_every_backend, TestDb};
use crate::support::{FIXED_NOW, SAMPLE};
use chrono::{DateTime, Duration, Utc};
use hypod::domain::{
    Claim, Enrichment, Fence, Proposal, ProposalDraft, ProposalFilter, ProposalStatus, Provenance,
    Review, ReviewAction, ReviewError, Role, RunRecord, RunStatus, RunSummary, SlotStatus, Trigger,
};
use hypod::history::Experiment;
use hypod::store::{AuditReport, QueueMark, Store, StoreError, UpsertCounts};
use std::sync::Arc;

on_every_backend!(
    upserts_count_new_updated_and_unchanged_experiments,
    experiments_load_in_bytewise_id_order,
    a_run_and_its_proposals_are_stored_together,
    a_failing_run_write_leaves_nothing_behind,
    proposals_are_listed_by_priority_and_filtered,
    proposals_are_looked_up_by_many_ids_at_once,
    runs_are_listed_newest_first,
    reviews_move_proposals_through_their_states,
    recent_rejections_come_with_their_proposals,
    concurrent_reviews_of_one_proposal_apply_once,
    the_audit_chain_holds_and_tampering_is_found,
    concurrent_writers_keep_one_audit_chain,
    a_run_assessed_against_an_old_queue_is_refused,
    a_run_closes_only_proposals_still_pending,
    migrating_twice_changes_nothing,
    a_run_that_lost_the_race_counts_duplicates_and_queues_nothing_twice,
    a_slot_is_claimed_once_and_taken_over_only_after_its_lease,
    a_fenced_commit_is_refused_once_the_lease_is_lost,
    concurrent_claims_of_one_slot_give_it_to_one,
    every_run_leaves_one_notification_delivered_once,
    the_push_outbox_is_tallied_with_the_age_of_its_oldest_pending_push,
);

/// The audit log verified under the test key: links, MACs, head and replay.
async fn verify(store: &dyn Store) -> AuditReport {
    hypod::app::audit::verify_store(store, &crate::backends::audit_key(), None)
        .await
        .expect("verify")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(FIXED_NOW)
        .expect("FIXED_NOW")
        .with_timezone(&Utc)
}

fn sample() -> Vec<Experiment> {
    let text = std::fs::read_to_string(SAMPLE).expect("the sample history");
    let report = hypod::history::import::parse_text(
        "sample",
        hypod::history::import::Format::Ndjson,
        text.as_str(),
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report.experiments
}

fn draft() -> ProposalDraft {
    let text =
        std::fs::read_to_string(crate::support::fixture("draft.json")).expect("the draft fixture");
    serde_json::from_str(&text).expect("a draft")
}

fn run(id: &str, started_at: DateTime<Utc>) -> RunRecord {
    RunRecord {
        id: id.into(),
        trigger: Trigger::Cli,
        status: RunStatus::Succeeded,
        started_at,
        finished_at: started_at + Duration::seconds(2),
        proposer: "builtin".into(),
        fell_back: None,
        error: None,
        summary: RunSummary {
            experiments: 3,
            drafts: 2,
            queued: 2,
            ..RunSummary::default()
        },
        usage: None,
        policy_digest: "p".repeat(64),
        input_digest: "i".repeat(64),
        rejected_drafts: Vec::new(),
        notes: vec!["a note".into()],
        audit_head: None,
        stage_seconds: Vec::new(),
    }
}

/// A proposal of `run_id`, at `segment`, with `priority`.
fn proposal(id: &str, run_id: &str, segment: &str, priority: f64) -> Proposal {
    let mut draft = draft();
    draft.segment = segment.into();
    Proposal {
        id: id.into(),
        run_id: run_id.into(),
        status: ProposalStatus::PendingReview,
        created_at: now(),
        updated_at: now(),
        draft,
        enrichment: Enrichment {
            priority,
            baseline_rate: Some(0.031),
            notes: vec!["from the fixture".into()],
            ..Enrichment::default()
        },
        verdicts: Vec::new(),
        provenance: Provenance {
            proposer: "builtin".into(),
            policy_digest: "p".repeat(64),
            input_digest: "i".repeat(64),
            ..Provenance::default()
        },
        approvals_required: 1,
        superseded_by: None,
    }
}

fn review(id: &str, actor: &str, role: Role, action: ReviewAction, note: Option<&str>) -> Review {
    Review {
        proposal_id: id.into(),
        actor: actor.into(),
        role,
        action,
        note: note.map(str::to_string),
        at: now() + Duration::minutes(5),
    }
}

async fn record(store: &dyn Store, run_id: &str, proposals: &[Proposal]) {
    store
        .record_run(&run(run_id, now()), proposals, &[], None, None)
        .await
        .expect("record the run");
}

async fn upserts_count_new_updated_and_unchanged_experiments(db: Arc<TestDb>) {
    let store = db.store();
    let mut experiments = sample();
    let n = experiments.len();
    assert_eq!(n, 246);
    let first = store
        .upsert_experiments(&experiments, "test")
        .await
        .expect("import");
    assert_eq!(
        first,
        UpsertCounts {
            inserted: n,
            updated: 0,
            unchanged: 0
        }
    );
    let again = store
        .upsert_experiments(&experiments, "test")
        .await
        .expect("again");
    assert_eq!(
        again,
        UpsertCounts {
            inserted: 0,
            updated: 0,
            unchanged: n
        }
    );
    experiments[7].name.push_str(" (renamed)");
    let mut extra = experiments[0].clone();
    extra.id = "exp-new-0001".into();
    experiments.push(extra);
    let changed = store
        .upsert_experiments(&experiments, "test")
        .await
        .expect("changed");
    assert_eq!(
        changed,
        UpsertCounts {
            inserted: 1,
            updated: 1,
            unchanged: n - 1
        }
    );
    let loaded = store.load_experiments().await.expect("load");
    assert_eq!(loaded.len(), n + 1);
    let renamed = loaded
        .iter()
        .find(|e| e.id == experiments[7].id)
        .expect("the renamed one");
    assert_eq!(renamed, &experiments[7], "updated in full");
    // Only writes are audited: two imports that changed something.
    let audit = store.audit_log().await.expect("audit");
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert!(audit
        .iter()
        .all(|e| e.action == hypod::domain::AuditAction::ExperimentsUpsert));
}

async fn experiments_load_in_bytewise_id_order(db: Arc<TestDb>) {
    let store = db.store();
    let template = sample().remove(0);
    // Ids a locale collation would order differently from bytes (case, punctuation).
    let ids = [
        "exp-b", "EXP-C", "exp-a_1", "exp-a-1", "exp-a1", "Exp-a", "exp-A",
    ];
    let experiments: Vec<Experiment> = ids
        .iter()
        .map(|id| Experiment {
            id: id.to_string(),
            ..template.clone()
        })
        .collect();
    store
        .upsert_experiments(&experiments, "test")
        .await
        .expect("import");
    let loaded: Vec<String> = store
        .load_experiments()
        .await
        .expect("load")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(loaded, expected, "{} sorts ids bytewise", db.backend);
    // And what comes back is what went in.
    let all = sample();
    store
        .upsert_experiments(&all, "test")
        .await
        .expect("import the sample");
    let loaded = store.load_experiments().await.expect("load");
    for experiment in &all {
        let back = loaded
            .iter()
            .find(|e| e.id == experiment.id)
            .expect("stored");
        assert_eq!(back, experiment);
    }
}

async fn a_run_and_its_proposals_are_stored_together(db: Arc<TestDb>) {
    let store = db.store();
    let proposals = vec![
        proposal("p-1", "run-1", "logged_in_repeat", 0.5),
        proposal("p-2", "run-1", "new_visitors", 0.9),
    ];
    let mut record = run("run-1", now());
    let head = store
        .record_run(&record, &proposals, &[], Some(QueueMark(0)), None)
        .await
        .expect("record");
    // The run is read back with the audit head its record published.
    record.audit_head = Some(head);
    assert_eq!(
        store.list_runs(10).await.expect("runs"),
        vec![record.clone()]
    );
    let got = store
        .get_proposal("p-1")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got, proposals[0], "a proposal comes back as it was stored");
    assert!(store.get_proposal("p-none").await.expect("get").is_none());
    // One audit entry per proposal, the policy set (new to the log), then the run.
    let audit = store.audit_log().await.expect("audit");
    let actions: Vec<(String, &str)> = audit
        .iter()
        .map(|e| (e.action.to_string(), e.subject.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("proposal.pending_review".to_string(), "p-1"),
            ("proposal.pending_review".to_string(), "p-2"),
            ("policies.changed".to_string(), "p".repeat(64).as_str()),
            ("run.succeeded".to_string(), "run-1"),
        ]
    );
    assert_eq!(audit[0].actor, "proposer:builtin");
    assert_eq!(store.queue_mark().await.expect("mark"), QueueMark(2));
}

async fn a_failing_run_write_leaves_nothing_behind(db: Arc<TestDb>) {
    let store = db.store();
    record(store, "run-1", &[proposal("p-1", "run-1", "a", 0.5)]).await;
    let before = store.audit_log().await.expect("audit").len();
    // The second proposal reuses an id: the insert fails half-way through the run.
    let clash = vec![
        proposal("p-2", "run-2", "b", 0.5),
        proposal("p-1", "run-2", "c", 0.5),
    ];
    let err = store
        .record_run(&run("run-2", now()), &clash, &[], None, None)
        .await
        .expect_err("a duplicate id fails the write");
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    assert_eq!(store.list_runs(10).await.expect("runs").len(), 1);
    assert!(store.get_proposal("p-2").await.expect("get").is_none());
    assert_eq!(store.audit_log().await.expect("audit").len(), before);
    let report = verify(store).await;
    assert!(report.intact, "{:?}", report.problems);
}

async fn proposals_are_looked_up_by_many_ids_at_once(db: Arc<TestDb>) {
    let store = db.store();
    record(
        store,
        "run-1",
        &[
            proposal("p-1", "run-1", "s", 0.5),
            proposal("p-2", "run-1", "s", 0.7),
        ],
    )
    .await;
    // More ids than one query takes, most of them unknown, the stored ones in the second batch.
    let mut ids: Vec<String> = (0..1500).map(|i| format!("missing-{i}")).collect();
    ids[1200] = "p-2".into();
    ids[1499] = "p-1".into();
    let found = store.get_proposals(&ids).await.expect("lookup");
    let found: Vec<&str> = found.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(found, ["p-1", "p-2"]);
    assert!(store.get_proposals(&[]).await.expect("none").is_empty());
}

async fn proposals_are_listed_by_priority_and_filtered(db: Arc<TestDb>) {
    let store = db.store();
    record(
        store,
        "run-1",
        &[
            proposal("p-a", "run-1", "s1", 0.2),
            proposal("p-b", "run-1", "s2", 0.9),
            proposal("p-c", "run-1", "s3", 0.5),
        ],
    )
    .await;
    let mut cart = proposal("p-d", "run-2", "s4", 0.5);
    cart.draft.moment = hypod::domain::Moment::CartCheckout;
    cart.status = ProposalStatus::Blocked;
    record(store, "run-2", &[cart]).await;

    let ids = |list: Vec<Proposal>| list.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let all = store
        .list_proposals(&ProposalFilter::default())
        .await
        .expect("list");
    // Highest priority first; equal priorities by id.
    assert_eq!(ids(all), ["p-b", "p-c", "p-d", "p-a"]);
    let pending = store
        .list_proposals(&ProposalFilter {
            status: Some(ProposalStatus::PendingReview),
            ..ProposalFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(pending), ["p-b", "p-c", "p-a"]);
    let cart = store
        .list_proposals(&ProposalFilter {
            moment: Some(hypod::domain::Moment::CartCheckout),
            ..ProposalFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(cart), ["p-d"]);
    let of_run = store
        .list_proposals(&ProposalFilter {
            run_id: Some("run-1".into()),
            limit: Some(2),
            ..ProposalFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(of_run), ["p-b", "p-c"]);
    let none = store
        .list_proposals(&ProposalFilter {
            status: Some(ProposalStatus::Approved),
            ..ProposalFilter::default()
        })
        .await
        .expect("list");
    assert!(none.is_empty());
}

async fn runs_are_listed_newest_first(db: Arc<TestDb>) {
    let store = db.store();
    for (id, minutes) in [("run-a", 0), ("run-c", 10), ("run-b", 5)] {
        store
            .record_run(
                &run(id, now() + Duration::minutes(minutes)),
                &[],
                &[],
                None,
                None,
            )
            .await
            .expect("record");
    }
    let runs = store.list_runs(2).await.expect("runs");
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["run-c", "run-b"]);
    assert_eq!(runs[0].notes, ["a note"]);
}

async fn reviews_move_proposals_through_their_states(db: Arc<TestDb>) {
    let store = db.store();
    let mut two = proposal("p-2", "run-1", "s2", 0.5);
    two.approvals_required = 2;
    record(
        store,
        "run-1",
        &[
            proposal("p-1", "run-1", "s1", 0.5),
            two,
            proposal("p-3", "run-1", "s3", 0.5),
        ],
    )
    .await;

    let approved = store
        .review(&review(
            "p-1",
            "ana",
            Role::Reviewer,
            ReviewAction::Approve,
            Some("good"),
        ))
        .await
        .expect("approve");
    assert_eq!(approved.status, ProposalStatus::Approved);
    assert_eq!(
        store
            .get_proposal("p-1")
            .await
            .expect("get")
            .expect("p-1")
            .status,
        ProposalStatus::Approved
    );
    let again = store
        .review(&review(
            "p-1",
            "bob",
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect_err("approved already");
    assert!(
        matches!(err_review(&again), Some(ReviewError::NotReviewable { .. })),
        "{again}"
    );

    // Two approvals needed, from two people.
    let first = store
        .review(&review(
            "p-2",
            "ana",
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect("first approval");
    assert_eq!(first.status, ProposalStatus::PendingReview);
    let twice = store
        .review(&review(
            "p-2",
            "ana",
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect_err("nobody approves twice");
    assert!(
        matches!(
            err_review(&twice),
            Some(ReviewError::AlreadyApproved { .. })
        ),
        "{twice}"
    );
    let second = store
        .review(&review(
            "p-2",
            "bob",
            Role::Governance,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect("second approval");
    assert_eq!(second.status, ProposalStatus::Approved);

    // A rejection needs a reason; the refused attempt leaves no trace.
    let no_reason = store
        .review(&review(
            "p-3",
            "cy",
            Role::Reviewer,
            ReviewAction::Reject,
            Some(" "),
        ))
        .await
        .expect_err("no reason");
    assert!(matches!(
        err_review(&no_reason),
        Some(ReviewError::ReasonRequired)
    ));
    let viewer = store
        .review(&review(
            "p-3",
            "vi",
            Role::Viewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect_err("viewers do not review");
    assert!(matches!(
        err_review(&viewer),
        Some(ReviewError::RoleMayNotReview(_))
    ));
    let rejected = store
        .review(&review(
            "p-3",
            "cy",
            Role::Reviewer,
            ReviewAction::Reject,
            Some("tried in 2023"),
        ))
        .await
        .expect("reject");
    assert_eq!(rejected.status, ProposalStatus::Rejected);
    let missing = store
        .review(&review(
            "p-9",
            "cy",
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect_err("no such proposal");
    assert!(matches!(
        err_review(&missing),
        Some(ReviewError::NotFound(_))
    ));

    let reviews = store.proposal_reviews("p-2").await.expect("reviews");
    let who: Vec<(&str, Role)> = reviews.iter().map(|r| (r.actor.as_str(), r.role)).collect();
    assert_eq!(who, [("ana", Role::Reviewer), ("bob", Role::Governance)]);
    let p3 = store.proposal_reviews("p-3").await.expect("reviews");
    assert_eq!(p3.len(), 1);
    assert_eq!(p3[0].note.as_deref(), Some("tried in 2023"));
    // Stamped by the database's clock, not the caller's `at`, and never before the proposal.
    let (before, after) = (
        Utc::now() - Duration::minutes(5),
        Utc::now() + Duration::minutes(5),
    );
    assert!(
        before <= p3[0].at && p3[0].at <= after,
        "{} is not the database's time",
        p3[0].at
    );
    assert_eq!(rejected.updated_at, p3[0].at);

    let audit = store.audit_log().await.expect("audit");
    let reviews_audited = audit
        .iter()
        .filter(|e| matches!(e.action, hypod::domain::AuditAction::Review(_)))
        .count();
    assert_eq!(reviews_audited, 4, "one entry per review that was recorded");
    let report = verify(store).await;
    assert!(report.intact, "{:?}", report.problems);
}

fn err_review(err: &StoreError) -> Option<&ReviewError> {
    match err {
        StoreError::Review(review) => Some(review),
        _ => None,
    }
}

async fn recent_rejections_come_with_their_proposals(db: Arc<TestDb>) {
    let store = db.store();
    record(
        store,
        "run-1",
        &[
            proposal("p-1", "run-1", "s1", 0.5),
            proposal("p-2", "run-1", "s2", 0.5),
        ],
    )
    .await;
    let old = review(
        "p-1",
        "ana",
        Role::Reviewer,
        ReviewAction::Reject,
        Some("old"),
    );
    store.review(&old).await.expect("reject p-1");
    // Reviews are stamped by the database's clock: the old one is dated 40 days before
    // `now()` under the store's back.
    db.execute(if db.backend == "sqlite" {
        "UPDATE reviews SET at = '2026-09-05T09:00:00.000000Z' WHERE proposal_id = 'p-1'"
    } else {
        "UPDATE reviews SET at = '2026-09-05T09:00:00Z' WHERE proposal_id = 'p-1'"
    })
    .await;
    store
        .review(&review(
            "p-2",
            "bob",
            Role::Reviewer,
            ReviewAction::Reject,
            Some("no traffic"),
        ))
        .await
        .expect("reject p-2");
    let recent = store
        .recent_rejections(now() - Duration::days(30))
        .await
        .expect("rejections");
    assert_eq!(recent.len(), 1);
    let (proposal, review) = &recent[0];
    assert_eq!(proposal.id, "p-2");
    assert_eq!(proposal.status, ProposalStatus::Rejected);
    assert_eq!(review.note.as_deref(), Some("no traffic"));
    assert_eq!(review.actor, "bob");
    let all = store
        .recent_rejections(now() - Duration::days(60))
        .await
        .expect("rejections");
    assert_eq!(all.len(), 2, "newest first: {all:?}");
    assert_eq!(all[0].0.id, "p-2");
}

async fn concurrent_reviews_of_one_proposal_apply_once(db: Arc<TestDb>) {
    record(db.store(), "run-1", &[proposal("p-1", "run-1", "s1", 0.5)]).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let action = if i % 2 == 0 {
                ReviewAction::Approve
            } else {
                ReviewAction::Reject
            };
            db.store()
                .review(&review(
                    "p-1",
                    &format!("user{i}"),
                    Role::Reviewer,
                    action,
                    Some("race"),
                ))
                .await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => applied += 1,
            Err(err) => assert!(
                matches!(err_review(&err), Some(ReviewError::NotReviewable { .. })),
                "only 'not reviewable' may refuse a racing review: {err}"
            ),
        }
    }
    assert_eq!(applied, 1, "exactly one of the racing reviews decides");
    assert_eq!(
        db.store()
            .proposal_reviews("p-1")
            .await
            .expect("reviews")
            .len(),
        1
    );
}

async fn the_audit_chain_holds_and_tampering_is_found(db: Arc<TestDb>) {
    let store = db.store();
    store
        .upsert_experiments(&sample(), "test")
        .await
        .expect("import");
    record(store, "run-1", &[proposal("p-1", "run-1", "s1", 0.5)]).await;
    store
        .review(&review(
            "p-1",
            "ana",
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect("approve");
    let audit = store.audit_log().await.expect("audit");
    // The import, the run's proposal, its policy set (the first logged), the run, the review.
    assert_eq!(audit.len(), 5);
    assert_eq!(audit[0].prev_hash, "", "the chain starts empty");
    for pair in audit.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].seq > pair[0].seq);
    }
    let ok = verify(store).await;
    assert_eq!((ok.entries, ok.intact), (5, true), "{:?}", ok.problems);

    db.execute("UPDATE audit_log SET detail = 'rewritten' WHERE seq = 2")
        .await;
    let tampered = verify(store).await;
    assert!(!tampered.intact);
    assert_eq!(
        tampered.problems[0].seq,
        Some(2),
        "{} finds the edit: {:?}",
        db.backend,
        tampered.problems
    );
}

async fn concurrent_writers_keep_one_audit_chain(db: Arc<TestDb>) {
    let experiments = sample();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let db = db.clone();
        let mut batch = experiments.clone();
        for e in &mut batch {
            e.id = format!("{}-{i}", e.id);
        }
        tasks.push(tokio::spawn(async move {
            db.store()
                .upsert_experiments(&batch, "test")
                .await
                .expect("import");
            let id = format!("run-{i}");
            db.store()
                .record_run(
                    &run(&id, now()),
                    &[proposal(&format!("p-{i}"), &id, "s", 0.5)],
                    &[],
                    None,
                    None,
                )
                .await
                .expect("record");
        }));
    }
    for task in tasks {
        task.await.expect("a writer");
    }
    let audit = db.store().audit_log().await.expect("audit");
    // Per writer an import, a proposal and a run; once, the policy set the first run used.
    assert_eq!(audit.len(), 6 * 3 + 1);
    let verified = verify(db.store()).await;
    assert!(
        verified.intact,
        "appends are serialised: one chain, no fork: {:?}",
        verified.problems
    );
}

async fn a_run_closes_only_proposals_still_pending(db: Arc<TestDb>) {
    use hypod::domain::{Closing, StatusChange};
    let store = db.store();
    record(
        store,
        "run-1",
        &[
            proposal("p-1", "run-1", "s1", 0.5),
            proposal("p-2", "run-1", "s2", 0.5),
        ],
    )
    .await;
    let expire = |id: &str| StatusChange {
        proposal_id: id.into(),
        closing: Closing::Expired,
        superseded_by: None,
        reason: "pending too long".into(),
    };
    let mark = store.queue_mark().await.expect("mark");
    // A reviewer approves p-1 after the run read the queue.
    store
        .review(&review(
            "p-1",
            "ana",
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        ))
        .await
        .expect("approve");
    let before = store.audit_log().await.expect("audit").len();
    let err = store
        .record_run(
            &run("run-2", now()),
            &[],
            &[expire("p-2"), expire("p-1")],
            Some(mark),
            None,
        )
        .await
        .expect_err("p-1 is no longer pending");
    assert!(
        matches!(&err, StoreError::ProposalMoved { proposal_id } if proposal_id == "p-1"),
        "{err}"
    );
    // Nothing of that run was written: p-2 is still pending, no entry was appended.
    let status = |p: Option<Proposal>| p.expect("stored").status;
    assert_eq!(
        status(store.get_proposal("p-2").await.expect("get")),
        ProposalStatus::PendingReview
    );
    assert_eq!(store.audit_log().await.expect("audit").len(), before);
    assert!(store.get_run("run-2").await.expect("get").is_none());
    // Assessed again: only p-2 expires; the approval stands; the log explains both.
    store
        .record_run(
            &run("run-3", now()),
            &[],
            &[expire("p-2")],
            Some(mark),
            None,
        )
        .await
        .expect("expire p-2");
    assert_eq!(
        status(store.get_proposal("p-2").await.expect("get")),
        ProposalStatus::Expired
    );
    assert_eq!(
        status(store.get_proposal("p-1").await.expect("get")),
        ProposalStatus::Approved
    );
    let report = verify(store).await;
    assert!(report.intact, "{:?}", report.problems);
    assert_eq!(report.proposals_explained, 2);
}

async fn a_run_assessed_against_an_old_queue_is_refused(db: Arc<TestDb>) {
    let store = db.store();
    let mark = store.queue_mark().await.expect("mark");
    assert_eq!(mark, QueueMark(0));
    // Another run queues first.
    store
        .record_run(
            &run("run-1", now()),
            &[proposal("p-1", "run-1", "s1", 0.5)],
            &[],
            Some(mark),
            None,
        )
        .await
        .expect("the first run");
    // This one read the queue before that: refused, and nothing of it is written.
    let err = store
        .record_run(
            &run("run-2", now()),
            &[proposal("p-2", "run-2", "s1", 0.5)],
            &[],
            Some(mark),
            None,
        )
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StoreError::QueueChanged {
                read_at: QueueMark(0),
                now: QueueMark(1)
            }
        ),
        "{err}"
    );
    assert_eq!(store.list_runs(10).await.expect("runs").len(), 1);
    assert!(store.get_proposal("p-2").await.expect("get").is_none());
    // A run that queues nothing has nothing to conflict with.
    store
        .record_run(&run("run-3", now()), &[], &[], Some(mark), None)
        .await
        .expect("an empty run");
    let fresh = store.queue_mark().await.expect("mark");
    store
        .record_run(
            &run("run-4", now()),
            &[proposal("p-4", "run-4", "s4", 0.5)],
            &[],
            Some(fresh),
            None,
        )
        .await
        .expect("a run that read the current queue");
    assert_eq!(store.queue_mark().await.expect("mark"), QueueMark(2));
}

async fn migrating_twice_changes_nothing(db: Arc<TestDb>) {
    let store = db.store();
    record(store, "run-1", &[proposal("p-1", "run-1", "s1", 0.5)]).await;
    store.migrate().await.expect("migrate again");
    let reopened = hypod::store::open(&db.url, crate::backends::audit_key())
        .await
        .expect("open by URL");
    assert!(reopened.get_proposal("p-1").await.expect("get").is_some());
}

/// A proposer that, the first time it is asked, lets another whole run queue its proposals
/// first: the run it serves read the queue before that one wrote, exactly the window two
/// concurrent `hypod run`s (or two replicas) meet.
struct Racing<'a> {
    store: &'a dyn Store,
    rival: hypod::app::run::RunPlan<'a>,
    inner: &'a hypod::proposer::builtin::BuiltinProposer,
    rival_record: tokio::sync::Mutex<Option<RunRecord>>,
}

#[async_trait::async_trait]
impl hypod::proposer::Proposer for Racing<'_> {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    async fn propose(
        &self,
        context: &hypod::proposer::ProposalContext<'_>,
    ) -> Result<hypod::proposer::ProposerOutput, hypod::proposer::ProposerError> {
        let mut rival = self.rival_record.lock().await;
        if rival.is_none() {
            let (record, _) = hypod::app::run::run_once(self.store, &self.rival)
                .await
                .expect("the rival run");
            *rival = Some(record);
        }
        self.inner.propose(context).await
    }
}

async fn a_run_that_lost_the_race_counts_duplicates_and_queues_nothing_twice(db: Arc<TestDb>) {
    use hypod::app::run::{run_once, RunPlan};
    let store = db.store();
    store
        .upsert_experiments(&sample(), "test")
        .await
        .expect("import");
    let mut config = hypod::config::Config::default();
    config.governance.policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies").into();
    let governance =
        hypod::governance::Governance::load(&config.policies_dir(), config.approval_settings())
            .expect("the shipped policies");
    let builtin = hypod::proposer::builtin::BuiltinProposer {
        alpha: config.analysis.alpha,
        power: config.analysis.power,
        min_days: config.proposer.min_days,
        max_days: config.proposer.max_days,
    };
    let plan = || RunPlan {
        config: &config,
        governance: &governance,
        proposer: &builtin,
        fallback: None,
        trigger: Trigger::Cli,
        now: now(),
        fence: None,
        sync_as: None,
    };
    let racing = Racing {
        store,
        rival: plan(),
        inner: &builtin,
        rival_record: tokio::sync::Mutex::new(None),
    };
    let late = RunPlan {
        proposer: &racing,
        ..plan()
    };
    let (late_record, late_queued) = run_once(store, &late).await.expect("the late run");
    let rival = racing
        .rival_record
        .lock()
        .await
        .clone()
        .expect("the rival ran");
    let stored_by_rival = rival.summary.queued + rival.summary.blocked;
    assert!(stored_by_rival >= 3, "{:?}", rival.summary);
    assert_eq!(late_record.status, RunStatus::Succeeded);
    assert!(late_queued.is_empty(), "{late_queued:#?}");
    assert_eq!(
        (late_record.summary.queued, late_record.summary.blocked),
        (0, 0)
    );
    assert_eq!(
        late_record.summary.duplicates, stored_by_rival,
        "every draft of the late run is counted as a duplicate of the rival's"
    );
    let all = store
        .list_proposals(&ProposalFilter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), stored_by_rival);
    assert_eq!(store.list_runs(10).await.expect("runs").len(), 2);
    let report = verify(store).await;
    assert!(report.intact, "{:?}", report.problems);
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

fn fence(claim: Claim) -> Fence {
    match claim {
        Claim::Claimed(fence) | Claim::TakenOver(fence) => fence,
        other => panic!("expected the slot, got {other:?}"),
    }
}

async fn a_slot_is_claimed_once_and_taken_over_only_after_its_lease(db: Arc<TestDb>) {
    let store = db.store();
    let key = "schedule:2026-12-02T01:00:00Z";
    let first = store.claim_slot(key, "a", LEASE).await.expect("claim");
    assert_eq!(
        first,
        Claim::Claimed(Fence {
            slot: key.into(),
            token: 1
        })
    );
    assert_eq!(
        store.claim_slot(key, "b", LEASE).await.expect("claim"),
        Claim::Held
    );
    assert!(store.expired_slots().await.expect("expired").is_empty());
    let held = fence(first);
    assert!(store.renew_lease(&held, LEASE).await.expect("renew"));
    // The holder lets go (as on shutdown): the next claim takes it over with token 2.
    store.release_slot(&held).await.expect("release");
    assert_eq!(
        store.expired_slots().await.expect("expired"),
        vec![key.to_string()]
    );
    let taken = store.claim_slot(key, "b", LEASE).await.expect("claim");
    assert_eq!(
        taken,
        Claim::TakenOver(Fence {
            slot: key.into(),
            token: 2
        })
    );
    // The old holder can neither renew nor end it any more.
    assert!(!store.renew_lease(&held, LEASE).await.expect("renew"));
    assert!(!store
        .end_slot(&held, SlotStatus::Failed, "late")
        .await
        .expect("end"));
    let taken = fence(taken);
    assert!(store
        .end_slot(&taken, SlotStatus::Failed, "the model was down")
        .await
        .expect("end"));
    assert_eq!(
        store.claim_slot(key, "c", LEASE).await.expect("claim"),
        Claim::Ended(SlotStatus::Failed)
    );
    let slots = store.list_slots(10).await.expect("slots");
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].status, SlotStatus::Failed);
    assert_eq!((slots[0].token, slots[0].takeovers), (2, 1));
    assert_eq!(slots[0].owner, "b");
    assert_eq!(slots[0].reason.as_deref(), Some("the model was down"));
}

async fn a_fenced_commit_is_refused_once_the_lease_is_lost(db: Arc<TestDb>) {
    let store = db.store();
    let key = "schedule:2026-12-03T01:00:00Z";
    let stale = fence(store.claim_slot(key, "a", LEASE).await.expect("claim"));
    store.release_slot(&stale).await.expect("release");
    let current = fence(store.claim_slot(key, "b", LEASE).await.expect("claim"));
    // The stale holder's run: refused, and nothing of it is written.
    let late = run("run-late", now());
    let err = store
        .record_run(
            &late,
            &[proposal("p-late", "run-late", "new_visitors", 1.0)],
            &[],
            None,
            Some(&stale),
        )
        .await
        .expect_err("a stale fence must not commit");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    assert!(store.list_runs(10).await.expect("runs").is_empty());
    assert!(store
        .list_proposals(&ProposalFilter::default())
        .await
        .expect("proposals")
        .is_empty());
    // The current holder commits, and the slot ends with its run.
    store
        .record_run(
            &run("run-now", now()),
            &[proposal("p-now", "run-now", "new_visitors", 1.0)],
            &[],
            None,
            Some(&current),
        )
        .await
        .expect("the holder commits");
    let slots = store.list_slots(10).await.expect("slots");
    assert_eq!(slots[0].status, SlotStatus::Succeeded);
    assert_eq!(slots[0].run_id.as_deref(), Some("run-now"));
    assert_eq!(
        store.claim_slot(key, "c", LEASE).await.expect("claim"),
        Claim::Ended(SlotStatus::Succeeded)
    );
}

async fn concurrent_claims_of_one_slot_give_it_to_one(db: Arc<TestDb>) {
    let key = "schedule:2026-12-04T01:00:00Z";
    let mut claims = Vec::new();
    for i in 0..8 {
        let db = db.clone();
        claims.push(tokio::spawn(async move {
            db.store()
                .claim_slot(key, &format!("replica-{i}"), LEASE)
                .await
                .expect("claim")
        }));
    }
    let mut won = 0;
    for claim in claims {
        match claim.await.expect("join") {
            Claim::Claimed(_) => won += 1,
            Claim::Held => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}

async fn every_run_leaves_one_notification_delivered_once(db: Arc<TestDb>) {
    let store = db.store();
    let hold = std::time::Duration::from_secs(60);
    let day = std::time::Duration::from_secs(86_400);
    record(store, "run-1", &[]).await;
    record(store, "run-2", &[]).await;
    assert_eq!(store.notification_counts().await.expect("counts"), (0, 2));
    let claimed = store
        .claim_notifications(10, hold, day)
        .await
        .expect("claim");
    let runs: Vec<&str> = claimed.iter().map(|i| i.about.subject()).collect();
    assert_eq!(runs, vec!["run-1", "run-2"]);
    assert!(claimed.iter().all(|i| i.attempts == 1));
    // Held: a second daemon gets nothing while the first is sending.
    assert!(store
        .claim_notifications(10, hold, day)
        .await
        .expect("claim")
        .is_empty());
    store
        .finish_notification(claimed[0].id, Ok(()), hold)
        .await
        .expect("delivered");
    // A failure comes back when its retry is due (here at once), with its attempts counted.
    store
        .finish_notification(
            claimed[1].id,
            Err("webhook answered 500".into()),
            std::time::Duration::ZERO,
        )
        .await
        .expect("failed");
    let retried = store
        .claim_notifications(10, hold, day)
        .await
        .expect("claim");
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].about.subject(), retried[0].attempts),
        ("run-2", 2)
    );
    store
        .finish_notification(retried[0].id, Ok(()), hold)
        .await
        .expect("delivered");
    assert_eq!(store.notification_counts().await.expect("counts"), (2, 0));
    assert!(store
        .get_run("run-2")
        .await
        .expect("get")
        .is_some_and(|r| r.id == "run-2"));
    assert!(store.get_run("run-9").await.expect("get").is_none());
}

/// `/metrics`' push figures: pushes counted per state, and the oldest pending one's age by the
/// database's clock (a push that keeps failing shows as an age that grows).
async fn the_push_outbox_is_tallied_with_the_age_of_its_oldest_pending_push(db: Arc<TestDb>) {
    use hypod::store::PushState;
    let store = db.store();
    assert_eq!(store.push_tally().await.expect("tally"), (Vec::new(), None));
    let proposals = vec![
        proposal("p-1", "run-1", "logged_in_repeat", 0.5),
        proposal("p-2", "run-1", "new_visitors", 0.9),
    ];
    record(store, "run-1", &proposals).await;
    let ids = vec!["p-1".to_string(), "p-2".to_string()];
    let queued = store
        .enqueue_pushes(&ids, "growthbook")
        .await
        .expect("queue the pushes");
    assert_eq!(queued.len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (counts, oldest) = store.push_tally().await.expect("tally");
    assert_eq!(counts, vec![(PushState::Pending, 2)]);
    let age = oldest.expect("an age");
    assert!((1.0..60.0).contains(&age), "{age}");
}
