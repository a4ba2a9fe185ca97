//! Synthetic experiment histories of any size, deterministic (a fixed linear congruential
//! sequence), shaped like the sample: six moments, the catalog's segments and signals, 2% running,
//! realistic traffic and conversion rates, and free-text notes. Shared by tests and benches.
#![allow(dead_code)]

use chrono::{Duration, NaiveDate};
use hypod::history::{Decision, Experiment, ExperimentStatus, Moment, Variant};

const LEVERS: [&str; 12] = [
    "personal_autocomplete",
    "social_proof",
    "ranking_by_affinity",
    "shipping_estimate",
    "reason_based_reactivation",
    "fit_information",
    "delivery_promise",
    "cross_sell_72h",
    "checkout_upsell",
    "zero_results_recovery",
    "alternatives_carousel",
    "winback_sequence",
];
const SEGMENTS: [&str; 8] = [
    "all_visitors",
    "new_visitors",
    "returning_anonymous",
    "logged_in_repeat",
    "vip_loyalty",
    "lapsed_90d",
    "eu_visitors",
    "mobile_app",
];
const SIGNALS: [&str; 5] = [
    "browsing_history",
    "page_context",
    "coarse_location",
    "cart_contents",
    "purchase_history",
];

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` experiments decided before 2026-11-20.
pub fn history(n: usize) -> Vec<Experiment> {
    let mut rng = Lcg(42);
    let end = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    (0..n)
        .map(|i| {
            let moment = Moment::ALL[rng.below(6) as usize];
            let lever = LEVERS[rng.below(LEVERS.len() as u64) as usize];
            let segment = SEGMENTS[rng.below(SEGMENTS.len() as u64) as usize];
            let signal = SIGNALS[rng.below(SIGNALS.len() as u64) as usize];
            let running = rng.below(50) == 0;
            let decided = end - Duration::days(rng.below(1_100) as i64);
            let visitors = 5_000 + rng.below(60_000);
            let rate = 0.02 + rng.below(60) as f64 / 1_000.0;
            let lift = (rng.below(200) as f64 - 80.0) / 1_000.0;
            let control_conversions = (visitors as f64 * rate) as u64;
            let treatment_conversions =
                ((visitors as f64 * rate * (1.0 + lift)) as u64).min(visitors);
            Experiment {
                id: format!("syn-{i:06}"),
                name: format!("{lever} for {segment} at {}", moment.as_str()),
                hypothesis: Some(format!(
                    "If we apply {lever} for {segment} at the {} moment, conversion rate will rise.",
                    moment.as_str()
                )),
                moment,
                lever: Some(lever.into()),
                segment: Some(segment.into()),
                channel: Some("web".into()),
                rendering: Some(["edge", "server", "client"][rng.below(3) as usize].into()),
                region: Some("global".into()),
                primary_kpi: "conversion_rate".into(),
                signals: vec![signal.into()],
                status: if running {
                    ExperimentStatus::Running
                } else {
                    ExperimentStatus::Concluded
                },
                idea_at: Some(decided - Duration::days(60)),
                started_at: Some(decided - Duration::days(40)),
                ended_at: (!running).then(|| decided - Duration::days(10)),
                decided_at: (!running).then_some(decided),
                decision: (!running).then(|| {
                    [Decision::Ship, Decision::Rollback, Decision::Iterate][rng.below(3) as usize]
                }),
                owner: Some("growth".into()),
                latency_ms_p75_delta: Some(rng.below(400) as f64 / 10.0),
                allocation: Some(vec![1.0, 1.0]),
                attributed_revenue: None,
                source_proposal: None,
                notes: (i % 7 == 0).then(|| {
                    "Ran during a sale week; traffic mix skewed to returning visitors. ".repeat(3)
                }),
                variants: vec![
                    Variant {
                        name: "control".into(),
                        control: true,
                        visitors,
                        conversions: control_conversions,
                        orders: None,
                        revenue: None,
                        revenue_sq: None,
                    },
                    Variant {
                        name: "treatment".into(),
                        control: false,
                        visitors,
                        conversions: treatment_conversions,
                        orders: None,
                        revenue: None,
                        revenue_sq: None,
                    },
                ],
            }
        })
        .collect()
}
