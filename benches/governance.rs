//! Governance speed: one proposal against the shipped policy set plus the consent rules, and a
//! batch of 1 000 proposals (as a run would govern them, queue counts updated in between).
//! Run with `cargo bench --bench governance`.

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use hypod::governance::sample::{default_catalog, sample_draft, sample_enrichment, sample_program};
use hypod::governance::{
    evaluate_all, govern_batch, ApprovalSettings, PolicyContext, PolicySet, QueueCounts, RunInputs,
};
use hypod::history::Moment;
use std::hint::black_box;

fn governance(c: &mut Criterion) {
    let catalog = default_catalog().expect("the shipped catalog parses");
    let policies = PolicySet::defaults().expect("the shipped policies load");
    let program = sample_program();
    let run = RunInputs::new(&catalog, &program);
    let now = Utc::now();
    let draft = sample_draft();
    let enrichment = sample_enrichment();
    let queue = QueueCounts::default();

    c.bench_function("govern one proposal (context + consent + policies)", |b| {
        b.iter(|| {
            let context = PolicyContext::for_run(&run, &draft, &enrichment, &queue, now);
            black_box(evaluate_all(&policies, &catalog, &context).expect("evaluates"))
        })
    });

    let drafts: Vec<_> = (0..1000)
        .map(|i| {
            let mut draft = sample_draft();
            draft.lever = format!("lever_{i}");
            draft.moment = Moment::ALL[i % Moment::ALL.len()];
            draft.expected_latency_ms = (i % 40) as f64;
            draft
        })
        .collect();
    let mut group = c.benchmark_group("batch");
    group.sample_size(20);
    group.bench_function("govern 1000 proposals", |b| {
        b.iter(|| {
            let mut queue = QueueCounts::default();
            black_box(
                govern_batch(
                    &policies,
                    &run,
                    drafts.iter().map(|d| (d, &enrichment)),
                    &mut queue,
                    &ApprovalSettings::default(),
                    now,
                )
                .expect("governs"),
            )
        })
    });
    group.finish();

    c.bench_function("load and compile the shipped policy set", |b| {
        b.iter(|| black_box(PolicySet::defaults().expect("loads")))
    });
}

criterion_group!(benches, governance);
criterion_main!(benches);
