//! The statistics engines a user chooses (`analysis.engine`, `analysis.prior`,
//! `analysis.sequential`): GrowthBook's Bayesian engine (gbstats 0.8 `EffectBayesianABTest`, a
//! Gaussian posterior on the relative lift: chance to win, credible interval, risk) and the
//! frequentist engine's sequential intervals (gbstats' `SequentialTwoSidedTTest`, the asymptotic
//! confidence sequences of Waudby-Smith et al.). Pure functions on numbers, like `stats`.
//!
//! Every value follows gbstats' own arithmetic (checked to 1e-9 against tables gbstats made,
//! `tests/reference/bayesian_table.json` and its script). Two computations are hypod's own,
//! so that nothing overflows or divides 0 by 0: the truncated-normal means of the risk use the
//! Mills ratio's continued fraction in the tail (where Φ is tiny or underflows, beyond
//! |μ/σ| ≈ 37), and the sequential p-value is computed in logarithms (gbstats' `1/exp(x)`
//! overflows to 0; ours is the underflowing tiny number). No output is ever NaN.

use super::dist;
use super::stats::{self, Moments, TestError};
use serde::{Deserialize, Serialize};

/// Which engine judges the experiments (`analysis.engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Welch's t on the relative lift (gbstats' frequentist engine), optionally sequential.
    #[default]
    Frequentist,
    /// gbstats' Bayesian engine: chance to win and risk on the relative lift.
    Bayesian,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Frequentist => "frequentist",
            Engine::Bayesian => "bayesian",
        }
    }
}

/// A proper Gaussian prior on the relative effect (`analysis.prior = {mean, stddev}`);
/// without one the prior is improper and flat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    pub mean: f64,
    pub stddev: f64,
}

/// Sequential testing (`analysis.sequential = {tuning = N}`): N is gbstats' tuning parameter,
/// the total sample size at which the confidence sequence is tightest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequential {
    pub tuning: f64,
}

/// GrowthBook's decision thresholds on the chance to win.
pub const WON_ABOVE: f64 = 0.95;
pub const LOST_BELOW: f64 = 0.05;

/// The Bayesian result of one comparison, on the relative scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BayesianResult {
    /// P(the treatment is better): P(X > 0), or P(X < 0) for a metric where lower is better.
    pub chance_to_win: f64,
    /// The credible interval (1 − α).
    pub ci_low: f64,
    pub ci_high: f64,
    /// Posterior mean and standard deviation of the relative lift.
    pub mean: f64,
    pub stddev: f64,
    /// Expected loss of choosing the control, and of choosing the treatment (relative).
    pub risk_control: f64,
    pub risk_treatment: f64,
}

impl BayesianResult {
    /// GrowthBook's call: won above 0.95, lost below 0.05; `None` in between.
    pub fn won(&self) -> Option<bool> {
        if self.chance_to_win > WON_ABOVE {
            Some(true)
        } else if self.chance_to_win < LOST_BELOW {
            Some(false)
        } else {
            None
        }
    }
}

/// Φ(z) and Φ(−z) as scipy's `ndtr` computes them (Cephes: `1 − ½erfc(x/√2)` above 0, so
/// that `1 − Φ` in gbstats' formulas rounds exactly as there), from one tail probability.
fn ndtr_pair(z: f64) -> (f64, f64) {
    let tail = dist::normal_sf(z.abs());
    if z > 0.0 {
        (1.0 - tail, tail)
    } else if z < 0.0 {
        (tail, 1.0 - tail)
    } else {
        (tail, tail)
    }
}

/// The inverse Mills ratio φ(x)/Φ(−x) for x ≥ 2, as `1/R(x)` with the Mills ratio's continued
/// fraction `R(x) = Φ(−x)/φ(x) = 1/(x + 1/(x + 2/(x + 3/(x + …))))`: accurate where Φ(−x) is
/// tiny or underflows, with no φ and no erfc in it (the quotient of the two lost 1e-9 at x = 8).
/// Evaluated backwards from the fixed point of its tail `t = (N+1)/(x + t)`; `10 + 240/x²`
/// terms reach 4e-16 relative from x = 2 on (checked against mpmath: 67 are needed at x = 2,
/// 35 at 3, 18 at 5, 11 at 8, 4 at 37).
fn inverse_mills(x: f64) -> f64 {
    let terms = (10.0 + 240.0 / (x * x)).min(70.0) as usize;
    let next = (terms + 1) as f64;
    let mut tail = 0.5 * ((x * x + 4.0 * next).sqrt() - x);
    for k in (1..=terms).rev() {
        tail = k as f64 / (x + tail);
    }
    x + tail
}

/// φ(z)/Φ(z) given φ(z) and Φ(z): the quotient while z > −2, the continued fraction below.
fn pdf_over_cdf(z: f64, pdf: f64, cdf: f64) -> f64 {
    if z > -2.0 {
        pdf / cdf
    } else {
        inverse_mills(-z)
    }
}

/// gbstats' `EffectBayesianABTest.get_risk`: with p = P(X < 0), the control's risk is
/// (1 − p)·E[X | X > 0] and the treatment's −p·E[X | X < 0]; `cdf` is (Φ(z), Φ(−z)).
fn risk(mean: f64, stddev: f64, z: f64, cdf: (f64, f64)) -> (f64, f64) {
    let p = cdf.1;
    // φ(z) = φ(−z): one exponential for both sides (0 where it underflows, |z| > 38.6).
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mean_positive = mean + stddev * pdf_over_cdf(z, pdf, cdf.0);
    let mean_negative = mean - stddev * pdf_over_cdf(-z, pdf, cdf.1);
    ((1.0 - p) * mean_positive, -(p * mean_negative))
}

/// The posterior of a relative lift `data_mean` with sampling variance `data_variance`, under
/// the prior (flat when `None`), as gbstats computes it; `inverse` for metrics where lower is
/// better (the chance to win and the two risks swap sides).
pub fn posterior(
    data_mean: f64,
    data_variance: f64,
    prior: Option<Prior>,
    inverse: bool,
    alpha: f64,
) -> Result<BayesianResult, TestError> {
    if !(data_mean.is_finite() && data_variance.is_finite() && data_variance > 0.0) {
        return Err(TestError::Other(
            "the Bayesian posterior is not computable on these numbers".into(),
        ));
    }
    let (precision, mean) = match prior {
        Some(prior) => {
            let prior_variance = prior.stddev * prior.stddev;
            let precision = 1.0 / data_variance + 1.0 / prior_variance;
            let mean = (data_mean / data_variance + prior.mean / prior_variance) / precision;
            (precision, mean)
        }
        None => (1.0 / data_variance, data_mean),
    };
    let stddev = (1.0 / precision).sqrt();
    let z = mean / stddev;
    let cdf = ndtr_pair(z);
    let chance_to_win = if inverse { 1.0 - cdf.0 } else { cdf.0 };
    let (risk_control, risk_treatment) = {
        let (control, treatment) = risk(mean, stddev, z, cdf);
        if inverse {
            (treatment, control)
        } else {
            (control, treatment)
        }
    };
    // scipy's `norm.ppf([α/2, 1 − α/2], μ, σ)`: ∓z·σ + μ.
    let critical = dist::normal_isf(alpha / 2.0);
    let result = BayesianResult {
        chance_to_win,
        ci_low: -critical * stddev + mean,
        ci_high: critical * stddev + mean,
        mean,
        stddev,
        risk_control,
        risk_treatment,
    };
    let all = [
        result.chance_to_win,
        result.ci_low,
        result.ci_high,
        result.mean,
        result.stddev,
        result.risk_control,
        result.risk_treatment,
    ];
    if all.iter().all(|x| x.is_finite()) {
        Ok(result)
    } else {
        Err(TestError::Other(
            "the Bayesian posterior is not computable on these numbers".into(),
        ))
    }
}

/// The Bayesian comparison of treatment against control on the relative lift: the data are the
/// delta-method lift and variance of `stats`, and the arms are checked as there (zero variance
/// in either arm, a zero control mean or fewer than two visitors are not computable).
pub fn bayesian(
    control: &Moments,
    treatment: &Moments,
    prior: Option<Prior>,
    inverse: bool,
    alpha: f64,
) -> Result<BayesianResult, TestError> {
    stats::check_comparable(control, treatment)?;
    let (lift, variance) = stats::relative_lift(control, treatment);
    posterior(lift, variance, prior, inverse, alpha)
}

/// A chance to win as a person writes it ("94 % chance to win", "> 99.9 % chance to win").
pub fn chance_text(chance: f64) -> String {
    let pct = chance * 100.0;
    if pct > 99.9 {
        "> 99.9 % chance to win".into()
    } else if pct < 0.1 {
        "< 0.1 % chance to win".into()
    } else if pct.round() >= 100.0 || pct.round() <= 0.0 {
        format!("{pct:.1} % chance to win")
    } else {
        format!("{pct:.0} % chance to win")
    }
}

/// A confidence sequence and its p-value for one estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialInterval {
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

/// gbstats' `SequentialTwoSidedTTest` for an estimate with sampling variance `variance` from
/// `total` visitors (both arms): the half-width `s·√n·√(2(nρ² + 1)/(n²ρ²)·ln(√(nρ² + 1)/α))`
/// with `ρ = √((−2 ln α + ln(−2 ln α + 1))/N*)`, and the p-value `min(1, 1/e)` with the
/// e-value `e = exp(ρ²·t²/(2(nρ² + 1)))/√(nρ² + 1)`, `t² = estimate²·n/variance` (taken in
/// logarithms, so it never overflows).
pub fn sequential_interval(
    estimate: f64,
    variance: f64,
    total: f64,
    sequential: Sequential,
    alpha: f64,
) -> SequentialInterval {
    let n = total;
    let rho = ((-2.0 * alpha.ln() + (-2.0 * alpha.ln() + 1.0).ln()) / sequential.tuning).sqrt();
    let s2 = variance * n;
    let rho2 = rho.powi(2);
    let tr2p1 = n * rho2 + 1.0;
    let width =
        s2.sqrt() * ((2.0 * tr2p1) * (tr2p1.sqrt() / alpha).ln() / (n * rho).powi(2)).sqrt();
    let st2 = estimate.powi(2) * n / variance;
    let ln_evalue = rho2 * st2 / (2.0 * tr2p1) - 0.5 * tr2p1.ln();
    let p_value = if ln_evalue <= 0.0 {
        1.0
    } else {
        (-ln_evalue).exp()
    };
    SequentialInterval {
        ci_low: estimate - width,
        ci_high: estimate + width,
        p_value,
    }
}

#[cfg(test)]
mod tests {
    //! `tests/reference/bayesian_table.json`, made by `make_bayesian_table.py` with gbstats
    //! 0.8.0 itself: every value to 1e-9 relative.
    use super::*;
    use serde_json::Value;

    fn table() -> Value {
        serde_json::from_str(include_str!("../../tests/reference/bayesian_table.json")).unwrap()
    }

    fn moments(kind: &str, arm: &Value) -> Result<Moments, String> {
        let n = arm["n"].as_u64().unwrap();
        let sum = arm["sum"].as_f64().unwrap();
        match kind {
            "proportion" => Moments::proportion(sum as u64, n),
            _ => Moments::sample_mean(sum, arm["sum_squares"].as_f64().unwrap(), n),
        }
    }

    /// Equal to 1e-9 relative. Values below 1e-300 are where both underflow into subnormal
    /// numbers (or gbstats' exp overflowed to a p-value of exactly 0): equal to 1e-300.
    fn assert_close(name: &str, field: &str, ours: f64, theirs: f64) {
        assert!(ours.is_finite(), "{name}: {field} is {ours}");
        assert!(
            (ours - theirs).abs() <= 1e-9 * theirs.abs() + 1e-300,
            "{name}: {field} {ours:e} vs gbstats {theirs:e}"
        );
    }

    #[test]
    fn bayesian_engine_matches_gbstats() {
        let table = table();
        assert_eq!(table["gbstats"], "0.8.0");
        let cases = table["bayesian"].as_array().unwrap();
        let (mut computed, mut declined) = (0, 0);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let kind = case["kind"].as_str().unwrap();
            let prior = (!case["prior"].is_null()).then(|| Prior {
                mean: case["prior"]["mean"].as_f64().unwrap(),
                stddev: case["prior"]["stddev"].as_f64().unwrap(),
            });
            let inverse = case["inverse"].as_bool().unwrap();
            let result = moments(kind, &case["control"])
                .and_then(|c| moments(kind, &case["treatment"]).map(|t| (c, t)))
                .map_err(TestError::Other)
                .and_then(|(c, t)| bayesian(&c, &t, prior, inverse, 0.05));
            if !case["error"].is_null() {
                // gbstats' uninformative default (chance 0.5, interval [0, 0]) with an error
                // message: hypod says the test is not computable, and why.
                assert!(result.is_err(), "{name}: {result:?}");
                declined += 1;
                continue;
            }
            let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            for (field, ours) in [
                ("chance_to_win", r.chance_to_win),
                ("mean", r.mean),
                ("stddev", r.stddev),
                ("risk_control", r.risk_control),
                ("risk_treatment", r.risk_treatment),
            ] {
                assert_close(name, field, ours, case[field].as_f64().unwrap());
            }
            // The interval's ends are μ ± 1.96σ: near 0 their relative error is that of μ and σ
            // (1e-9 of σ), as in any subtraction.
            for (field, ours) in [("ci_low", r.ci_low), ("ci_high", r.ci_high)] {
                let theirs = case[field].as_f64().unwrap();
                assert!(
                    (ours - theirs).abs() <= 1e-9 * theirs.abs().max(r.stddev),
                    "{name}: {field} {ours:e} vs gbstats {theirs:e}"
                );
            }
            computed += 1;
        }
        assert_eq!((computed, declined), (107, 4));
    }

    #[test]
    fn sequential_intervals_match_gbstats() {
        let table = table();
        let cases = table["sequential"].as_array().unwrap();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let kind = case["kind"].as_str().unwrap();
            let c = moments(kind, &case["control"]).unwrap();
            let t = moments(kind, &case["treatment"]).unwrap();
            stats::check_comparable(&c, &t).unwrap();
            let (estimate, variance) = match case["difference"].as_str().unwrap() {
                "relative" => stats::relative_lift(&c, &t),
                _ => (t.mean - c.mean, t.variance / t.n + c.variance / c.n),
            };
            let sequential = Sequential {
                tuning: case["tuning"].as_f64().unwrap(),
            };
            let r = sequential_interval(estimate, variance, c.n + t.n, sequential, 0.05);
            let name = format!("{name} {}", case["difference"]);
            assert_close(
                &name,
                "estimate",
                estimate,
                case["estimate"].as_f64().unwrap(),
            );
            assert_close(
                &name,
                "p_value",
                r.p_value,
                case["p_value"].as_f64().unwrap(),
            );
            let width = r.ci_high - r.ci_low;
            for (field, ours) in [("ci_low", r.ci_low), ("ci_high", r.ci_high)] {
                let theirs = case[field].as_f64().unwrap();
                assert!(
                    (ours - theirs).abs() <= 1e-9 * theirs.abs().max(width),
                    "{name}: {field} {ours:e} vs gbstats {theirs:e}"
                );
            }
        }
        assert_eq!(cases.len(), 62);
    }

    #[test]
    fn far_tails_are_finite_and_ordered() {
        for z in [
            -1e4, -900.0, -40.0, -37.5, -37.0, -10.0, 0.0, 10.0, 37.0, 40.0, 1e4,
        ] {
            let r = posterior(z * 0.01, 1e-4, None, false, 0.05).unwrap();
            assert!(
                r.risk_control >= 0.0 && r.risk_treatment >= 0.0,
                "{z}: {r:?}"
            );
            assert!((0.0..=1.0).contains(&r.chance_to_win), "{z}: {r:?}");
        }
        // Either side of the switch to the continued fraction, φ/Φ is continuous, and in the
        // far tail it is x + 1/x − …: E[X | X > 0] of a posterior far below 0 is ~σ/|z|.
        let direct = |z: f64| {
            let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            pdf / dist::normal_cdf(z)
        };
        let (a, b) = (direct(-1.999_999_999), inverse_mills(2.0));
        assert!((a - b).abs() < 1e-8 * a, "{a} {b}");
        let x = 1e4;
        assert!((inverse_mills(x) - (x + 1.0 / x)).abs() < 1e-12 * x);
    }
}
