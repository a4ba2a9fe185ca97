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
                external_id: None,
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
                        conversions: Some(control_conversions),
                        orders: None,
                        revenue: None,
                        revenue_sq: None,
                    },
                    Variant {
                        name: "treatment".into(),
                        control: false,
                        visitors,
                        conversions: Some(treatment_conversions),
                        orders: None,
                        revenue: None,
                        revenue_sq: None,
                    },
                ],
                summary: None,
            }
        })
        .collect()
}

/// The names one program gives its segments, signals and levers. The generator's roles are the
/// same in every vocabulary; only the names change (with a catalog that matches).
pub struct Vocabulary {
    pub name: &'static str,
    /// all, new, returning, members (logged in), vip (logged in), eu.
    pub segments: [&'static str; 6],
    /// context (no purpose), browsing, cart, purchases (logged in), precise location.
    pub signals: [&'static str; 5],
    /// The levers, by role (see [`realistic`]).
    pub levers: [&'static str; 14],
}

pub const VOCABULARIES: [Vocabulary; 3] = [
    Vocabulary {
        name: "classic",
        segments: [
            "all_visitors",
            "new_visitors",
            "returning_anonymous",
            "logged_in_repeat",
            "vip_loyalty",
            "eu_visitors",
        ],
        signals: [
            "page_context",
            "browsing_history",
            "cart_contents",
            "purchase_history",
            "precise_geolocation",
        ],
        levers: [
            "size_advisor",
            "trending_badges",
            "bundle_builder",
            "voice_of_customer",
            "autocomplete_personal",
            "sticky_add_to_cart",
            "express_checkout",
            "reorder_reminder",
            "winback_reason",
            "layout_refresh",
            "hero_video",
            "checkout_upsell",
            "engagement_carousel",
            "urgency_timer",
        ],
    },
    Vocabulary {
        name: "retailer",
        segments: [
            "everyone",
            "first_timers",
            "browsers_back",
            "members",
            "gold_tier",
            "europe",
        ],
        signals: ["ctx", "clickstream", "basket", "order_log", "gps"],
        levers: [
            "fit_finder",
            "hot_now_tags",
            "kit_maker",
            "review_snippets",
            "smart_suggest",
            "pinned_buy_button",
            "one_tap_pay",
            "refill_nudge",
            "come_back_story",
            "grid_v2",
            "motion_banner",
            "add_on_offer",
            "swipe_rail",
            "countdown",
        ],
    },
    Vocabulary {
        name: "marketplace",
        segments: [
            "traffic_all",
            "prospects",
            "anon_returners",
            "account_holders",
            "power_buyers",
            "eea_traffic",
        ],
        signals: [
            "request_context",
            "session_events",
            "basket_state",
            "order_history",
            "device_location",
        ],
        levers: [
            "measurements_helper",
            "popularity_signal",
            "set_configurator",
            "qna_highlights",
            "query_memory",
            "floating_cta",
            "saved_wallet",
            "replenish_ping",
            "lapse_reasoning",
            "tile_density",
            "autoplay_hero",
            "last_step_addon",
            "story_feed",
            "scarcity_clock",
        ],
    },
];

/// The lever roles of [`realistic`] (indexes into [`Vocabulary::levers`]).
pub mod role {
    /// Proven again and again on product pages, for logged-in segments only: transfer it to
    /// the anonymous segments (the planted segment transfer).
    pub const TRANSFER_SEGMENTS: usize = 0;
    /// Proven again and again in search, never tried on product pages (the planted moment
    /// transfer).
    pub const TRANSFER_MOMENT: usize = 1;
    /// Proven in cart and checkout for most segments; one segment's only test far too small
    /// (the planted re-test).
    pub const RETEST: usize = 2;
    /// Flat in search; one test shipped on an inconclusive result (the planted validation).
    pub const VALIDATE: usize = 3;
    /// Positive background levers, one per moment.
    pub const SEARCH_GOOD: usize = 4;
    pub const PDP_GOOD: usize = 5;
    pub const CHECKOUT_GOOD: usize = 6;
    pub const POST_PURCHASE_GOOD: usize = 7;
    pub const REENGAGEMENT_GOOD: usize = 8;
    /// Flat on product pages.
    pub const PDP_FLAT: usize = 9;
    /// Negative in search.
    pub const SEARCH_BAD: usize = 10;
    /// Negative in checkout.
    pub const CHECKOUT_BAD: usize = 11;
    /// A KPI mirage: clicks up, conversion down (product pages).
    pub const MIRAGE: usize = 12;
    /// Negative, but its best test had a sample ratio mismatch with a big "win" (search).
    pub const SRM_TRAP: usize = 13;
}

/// What [`realistic`] planted, and the truth behind it.
pub struct Planted {
    /// (lever, moment) to transfer to other segments.
    pub transfer_segments: (String, Moment),
    /// (lever, target moment).
    pub transfer_moment: (String, Moment),
    pub retest: String,
    pub validate: String,
    pub cover: Moment,
    /// Levers whose true effect is negative: never to be transferred.
    pub negative_levers: Vec<String>,
}

pub struct Realistic {
    pub experiments: Vec<Experiment>,
    pub catalog_toml: String,
    pub planted: Planted,
    /// The day the history is read (its last decision a few days before).
    pub today: NaiveDate,
}

/// A standard normal draw (Box–Muller on the generator).
fn gauss(rng: &mut Lcg) -> f64 {
    let u1 = (rng.below(1_000_000) as f64 + 0.5) / 1_000_000.0;
    let u2 = rng.below(1_000_000) as f64 / 1_000_000.0;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn base_rate(moment: Moment) -> f64 {
    match moment {
        Moment::Search => 0.04,
        Moment::ProductDetail => 0.06,
        Moment::CartCheckout => 0.35,
        Moment::PostPurchase => 0.08,
        Moment::ReEngagement => 0.03,
        Moment::Other => 0.05,
    }
}

/// One test's specification before it is turned into an experiment.
struct Spec {
    lever: usize,
    moment: Moment,
    segment: usize,
    /// True relative effect on conversion.
    effect: f64,
    /// Days before `today` it was decided.
    age_days: i64,
    /// Standard error of the relative lift the sample is sized for (None: `visitors` given).
    visitors: Option<u64>,
    decision: Option<Decision>,
    /// Exact observed lift instead of a noisy one (planted tests).
    exact_lift: Option<f64>,
    kpi: &'static str,
    srm: bool,
    latency: f64,
    rendering: &'static str,
    signal: usize,
}

impl Spec {
    fn new(lever: usize, moment: Moment, segment: usize, effect: f64, age_days: i64) -> Spec {
        Spec {
            lever,
            moment,
            segment,
            effect,
            age_days,
            visitors: None,
            decision: None,
            exact_lift: None,
            kpi: "conversion_rate",
            srm: false,
            latency: 4.0,
            rendering: "server",
            signal: 1,
        }
    }
}

/// A realistic program history of about 420 experiments over three years, across the five
/// commerce moments, for one vocabulary and seed: levers whose true effects differ by moment
/// (and a little by segment), sampling noise, sample ratio mismatches, KPI mirages (tests on
/// click-through), latency leaks, a few rules shipped without proof, and exactly one planted
/// opportunity of each kind an analyst looks for (see [`Planted`]). One moment (post-purchase
/// or re-engagement, by seed) had no test in the last 12 months.
pub fn realistic(seed: u64, vocabulary: &Vocabulary) -> Realistic {
    use role::*;
    let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7));
    let today = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let cover = if seed.is_multiple_of(2) {
        Moment::PostPurchase
    } else {
        Moment::ReEngagement
    };
    let (s, p, c, pp, r) = (
        Moment::Search,
        Moment::ProductDetail,
        Moment::CartCheckout,
        Moment::PostPurchase,
        Moment::ReEngagement,
    );
    let mut specs: Vec<Spec> = Vec::new();
    let age = |rng: &mut Lcg| 20 + rng.below(1_060) as i64;
    // A lever at its home moment (every segment), and flat at both neighbouring moments.
    let lever_tests = |rng: &mut Lcg,
                       specs: &mut Vec<Spec>,
                       lever: usize,
                       home: Moment,
                       effect: f64,
                       neighbours: [Moment; 2],
                       home_tests: usize| {
        for i in 0..home_tests {
            let segment = i % 6;
            let tweak = 1.0 + 0.15 * gauss(rng);
            specs.push(Spec::new(lever, home, segment, effect * tweak, age(rng)));
        }
        for m in neighbours {
            for _ in 0..4 {
                let segment = rng.below(6) as usize;
                specs.push(Spec::new(lever, m, segment, 0.002 * gauss(rng), age(rng)));
            }
        }
    };
    // Background levers.
    lever_tests(&mut rng, &mut specs, SEARCH_GOOD, s, 0.03, [p, r], 32);
    lever_tests(&mut rng, &mut specs, PDP_GOOD, p, 0.025, [s, c], 32);
    lever_tests(&mut rng, &mut specs, CHECKOUT_GOOD, c, 0.03, [p, pp], 32);
    lever_tests(
        &mut rng,
        &mut specs,
        POST_PURCHASE_GOOD,
        pp,
        0.03,
        [c, r],
        32,
    );
    lever_tests(
        &mut rng,
        &mut specs,
        REENGAGEMENT_GOOD,
        r,
        0.035,
        [pp, s],
        32,
    );
    lever_tests(&mut rng, &mut specs, PDP_FLAT, p, 0.0, [s, c], 26);
    lever_tests(&mut rng, &mut specs, SEARCH_BAD, s, -0.03, [p, r], 22);
    lever_tests(&mut rng, &mut specs, CHECKOUT_BAD, c, -0.035, [p, pp], 22);
    // The KPI mirage: its click-through tests "win"; on conversion it loses.
    lever_tests(&mut rng, &mut specs, MIRAGE, p, -0.03, [s, c], 10);
    for _ in 0..8 {
        let mut spec = Spec::new(MIRAGE, p, rng.below(6) as usize, 0.08, age(&mut rng));
        spec.kpi = "click_through_rate";
        spec.decision = Some(Decision::Ship);
        specs.push(spec);
    }
    // The SRM trap: losing, but one broken split "won" big.
    lever_tests(&mut rng, &mut specs, SRM_TRAP, s, -0.03, [p, r], 8);
    let mut trap = Spec::new(SRM_TRAP, s, 0, 0.12, 200);
    trap.srm = true;
    trap.exact_lift = Some(0.12);
    trap.decision = Some(Decision::Ship);
    specs.push(trap);
    // A latency leak: a client-side variant of the flat PDP lever, far over budget.
    for _ in 0..3 {
        let mut spec = Spec::new(PDP_FLAT, p, rng.below(6) as usize, 0.0, age(&mut rng));
        spec.rendering = "client";
        spec.latency = 120.0;
        specs.push(spec);
    }
    // Planted: a segment transfer (logged-in segments only, product pages).
    for i in 0..14 {
        specs.push(Spec::new(
            TRANSFER_SEGMENTS,
            p,
            3 + i % 2,
            0.05 * (1.0 + 0.1 * gauss(&mut rng)),
            age(&mut rng),
        ));
    }
    for m in [s, c] {
        for _ in 0..3 {
            specs.push(Spec::new(
                TRANSFER_SEGMENTS,
                m,
                3 + rng.below(2) as usize,
                0.0,
                age(&mut rng),
            ));
        }
    }
    // Planted: a moment transfer (search → product pages); tried in re-engagement long ago.
    lever_tests(&mut rng, &mut specs, TRANSFER_MOMENT, s, 0.06, [r, r], 16);
    // Planted: a retest (cart and checkout); every segment proven but one, tested far too small.
    for i in 0..20 {
        let segment = [0, 1, 3, 4, 5][i % 5];
        specs.push(Spec::new(RETEST, c, segment, 0.04, age(&mut rng)));
    }
    for m in [p, pp] {
        for _ in 0..3 {
            specs.push(Spec::new(
                RETEST,
                m,
                rng.below(6) as usize,
                0.0,
                age(&mut rng),
            ));
        }
    }
    let mut small = Spec::new(RETEST, c, 2, 0.04, 45);
    small.visitors = Some(1_500);
    small.exact_lift = Some(0.02);
    small.decision = Some(Decision::Iterate);
    let retest_index = specs.len();
    specs.push(small);
    // Planted: a rule shipped on a flat result (search, the busiest segment), and two decoys
    // (small segments, small claims).
    for i in 0..12 {
        // Never in the busiest segment: that place's only test is the shipped one.
        specs.push(Spec::new(VALIDATE, s, 1 + i % 5, 0.003, age(&mut rng)));
    }
    for m in [p, r] {
        for _ in 0..4 {
            specs.push(Spec::new(
                VALIDATE,
                m,
                rng.below(6) as usize,
                0.0,
                age(&mut rng),
            ));
        }
    }
    let mut shipped = Spec::new(VALIDATE, s, 0, 0.003, 90);
    shipped.visitors = Some(300_000);
    shipped.exact_lift = Some(0.012);
    shipped.decision = Some(Decision::Ship);
    let validate_index = specs.len();
    specs.push(shipped);
    for (lever, moment) in [(PDP_FLAT, p), (SEARCH_BAD, s)] {
        let mut decoy = Spec::new(lever, moment, 4, 0.0, 300);
        decoy.exact_lift = Some(0.004);
        decoy.decision = Some(Decision::Ship);
        specs.push(decoy);
    }
    // A couple of background splits broken by a redirect.
    for i in 0..3 {
        let mut broken = Spec::new(PDP_GOOD, p, i, 0.02, age(&mut rng));
        broken.srm = true;
        specs.push(broken);
    }

    let mut experiments = Vec::with_capacity(specs.len());
    let mut ids = (String::new(), String::new());
    for (n, spec) in specs.iter_mut().enumerate() {
        // Nothing in the neglected moment during the last 12 months.
        if spec.moment == cover && spec.age_days < 380 {
            spec.age_days += 380;
        }
        let rate = base_rate(spec.moment) * (0.85 + 0.3 * rng.below(1_000) as f64 / 1_000.0);
        let target_se = 0.005 + 0.003 * rng.below(1_000) as f64 / 1_000.0;
        let visitors = spec
            .visitors
            .unwrap_or_else(|| (2.0 * (1.0 - rate) / (rate * target_se * target_se)).ceil() as u64);
        let se = (2.0 * (1.0 - rate) / (rate * visitors as f64)).sqrt();
        let lift = spec
            .exact_lift
            .unwrap_or_else(|| spec.effect + se * gauss(&mut rng));
        let control_conversions = (visitors as f64 * rate).round() as u64;
        let treatment_visitors = if spec.srm {
            visitors + visitors / 15
        } else {
            visitors
        };
        let treatment_conversions = ((treatment_visitors as f64 * rate * (1.0 + lift)).round()
            as u64)
            .min(treatment_visitors);
        // Shipped when clearly proven (a margin over p < 0.05 for the rounding of counts).
        let proven_like = lift / se > 2.3;
        let decision = spec.decision.unwrap_or(if proven_like && !spec.srm {
            Decision::Ship
        } else if rng.below(4) == 0 {
            Decision::Iterate
        } else {
            Decision::Rollback
        });
        let decided = today - Duration::days(spec.age_days);
        let lever = vocabulary.levers[spec.lever];
        let segment = vocabulary.segments[spec.segment];
        let id = format!("{}-{seed}-{n:04}", vocabulary.name);
        if n == retest_index {
            ids.0 = id.clone();
        }
        if n == validate_index {
            ids.1 = id.clone();
        }
        let arm = |name: &str, control: bool, visitors: u64, conversions: u64| Variant {
            name: name.into(),
            control,
            visitors,
            conversions: Some(conversions),
            orders: Some(conversions),
            revenue: Some(conversions as f64 * 80.0),
            revenue_sq: Some(conversions as f64 * 80.0 * 80.0 * 1.4),
        };
        experiments.push(Experiment {
            id,
            external_id: None,
            name: format!(
                "{} for {} at {}",
                lever.replace('_', " "),
                segment,
                spec.moment.as_str()
            ),
            hypothesis: Some(format!(
                "If we apply {lever} for {segment} at the {} moment, {} will rise.",
                spec.moment.as_str(),
                spec.kpi
            )),
            moment: spec.moment,
            lever: Some(lever.into()),
            segment: Some(segment.into()),
            channel: Some("web".into()),
            rendering: Some(spec.rendering.into()),
            region: Some("global".into()),
            primary_kpi: spec.kpi.into(),
            signals: vec![vocabulary.signals[spec.signal].into()],
            status: ExperimentStatus::Concluded,
            idea_at: Some(decided - Duration::days(40 + rng.below(40) as i64)),
            started_at: Some(decided - Duration::days(30)),
            ended_at: Some(decided - Duration::days(3)),
            decided_at: Some(decided),
            decision: Some(decision),
            owner: Some("growth".into()),
            latency_ms_p75_delta: Some(spec.latency),
            allocation: Some(vec![1.0, 1.0]),
            attributed_revenue: None,
            source_proposal: None,
            notes: None,
            variants: vec![
                arm("control", true, visitors, control_conversions),
                arm(
                    "treatment",
                    false,
                    treatment_visitors,
                    treatment_conversions,
                ),
            ],
            summary: None,
        });
    }
    experiments.sort_by_key(|e| e.decided_at);

    let [all, new, returning, members, vip, eu] = vocabulary.segments;
    let [context, browsing, cart, purchases, location] = vocabulary.signals;
    let catalog_toml = format!(
        r#"commercial_kpis = ["conversion_rate", "revenue_per_visitor", "average_order_value", "repeat_purchase_rate"]
default_conversion_value = 80.0

[latency_budget_ms]
edge = 10.0
server = 50.0
client = 30.0

[[purpose]]
name = "personalization"
[[purpose]]
name = "analytics"
[[purpose]]
name = "precise_geolocation"

[[segment]]
name = "{all}"
daily_visitors = 60000
identity = "anonymous"
consent = {{ personalization = 0.62, analytics = 0.7, precise_geolocation = 0.2 }}
[[segment]]
name = "{new}"
daily_visitors = 25000
identity = "anonymous"
consent = {{ personalization = 0.55, analytics = 0.65 }}
[[segment]]
name = "{returning}"
daily_visitors = 18000
identity = "anonymous"
consent = {{ personalization = 0.6, analytics = 0.7 }}
[[segment]]
name = "{members}"
daily_visitors = 9000
identity = "logged_in"
consent = {{ personalization = 0.85, analytics = 0.9 }}
[[segment]]
name = "{vip}"
daily_visitors = 2500
identity = "logged_in"
consent = {{ personalization = 0.92, analytics = 0.95 }}
[[segment]]
name = "{eu}"
daily_visitors = 20000
identity = "anonymous"
region = "eu"
consent = {{ personalization = 0.48, analytics = 0.55 }}

[[signal]]
name = "{context}"
[[signal]]
name = "{browsing}"
purposes = ["personalization"]
[[signal]]
name = "{cart}"
purposes = ["personalization"]
[[signal]]
name = "{purchases}"
purposes = ["personalization"]
identity = "logged_in"
[[signal]]
name = "{location}"
purposes = ["precise_geolocation"]
restricted_regions = ["eu"]
"#
    );
    let lever = |role: usize| vocabulary.levers[role].to_string();
    Realistic {
        experiments,
        catalog_toml,
        planted: Planted {
            transfer_segments: (lever(TRANSFER_SEGMENTS), p),
            transfer_moment: (lever(TRANSFER_MOMENT), p),
            retest: ids.0,
            validate: ids.1,
            cover,
            negative_levers: [SEARCH_BAD, CHECKOUT_BAD, MIRAGE, SRM_TRAP]
                .into_iter()
                .map(lever)
                .collect(),
        },
        today,
    }
}
