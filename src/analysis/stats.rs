//! Frequentist tests as in GrowthBook's `gbstats`: Welch's t on the relative lift with the
//! delta method (the primary test), the absolute difference beside it, ratio metrics, sample
//! ratio mismatch, power and sample size. Pure functions on numbers; nothing here panics or
//! returns NaN: a statistic that cannot be computed is an error that says why.
//!
//! Degenerate arms follow one rule, as in gbstats: when **either** arm has zero variance (0 %
//! or 100 % conversion, constant revenue, a single order) the test is not computable and the
//! error names the arm. A variance computed from sums is "zero" when it is rounding noise: at
//! most [`ROUNDING_EPS`] times the magnitude of the terms it was computed from (the sum of
//! squares for a mean, the largest delta-method term for a ratio), so a constant order value
//! that leaves 1e-12 of noise does not become a test with absurd degrees of freedom.

use super::dist;
use std::fmt;

/// Relative size below which a variance is taken for the rounding noise of its computation.
pub const ROUNDING_EPS: f64 = 1e-9;

/// Mean and variance of one metric in one variant, per visitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub mean: f64,
    pub variance: f64,
    /// The magnitude the variance was computed from: a variance at most
    /// `ROUNDING_EPS · noise_scale` is rounding noise, i.e. zero. 0 for exact variances.
    pub noise_scale: f64,
}

impl Moments {
    /// Whether this arm has no variance at all, or only rounding noise.
    pub fn has_zero_variance(&self) -> bool {
        // Also true for a NaN variance.
        self.variance.is_nan() || self.variance <= ROUNDING_EPS * self.noise_scale
    }
}

/// Which arm of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Control,
    Treatment,
}

/// Why a comparison cannot be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum TestError {
    /// One arm (the first found, control first) has zero variance.
    ZeroVariance(Arm),
    /// Anything else, in words.
    Other(String),
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestError::ZeroVariance(Arm::Control) => write!(f, "the control has zero variance"),
            TestError::ZeroVariance(Arm::Treatment) => {
                write!(f, "the treatment has zero variance")
            }
            TestError::Other(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for TestError {
    fn from(reason: String) -> Self {
        TestError::Other(reason)
    }
}

impl Moments {
    /// A conversion proportion: `m = x/n`, variance `m(1-m)`.
    pub fn proportion(conversions: u64, visitors: u64) -> Result<Moments, String> {
        if visitors == 0 {
            return Err("no visitors".into());
        }
        let n = visitors as f64;
        let mean = conversions as f64 / n;
        Ok(Moments {
            n,
            mean,
            variance: mean * (1.0 - mean),
            noise_scale: 0.0,
        })
    }

    /// A per-visitor sum: `m = S/n`, variance `(SS - S²/n)/(n-1)`.
    pub fn sample_mean(sum: f64, sum_squares: f64, visitors: u64) -> Result<Moments, String> {
        if visitors < 2 {
            return Err("fewer than two visitors".into());
        }
        let n = visitors as f64;
        let variance = ((sum_squares - sum * sum / n) / (n - 1.0)).max(0.0);
        Ok(Moments {
            n,
            mean: sum / n,
            variance,
            noise_scale: sum_squares.abs() / (n - 1.0),
        })
    }

    /// A ratio metric `Σnum / Σden` per visitor, by the delta method, from the sums, sums of
    /// squares and the sum of cross products over visitors.
    pub fn ratio(
        num: (f64, f64),
        den: (f64, f64),
        cross: f64,
        visitors: u64,
    ) -> Result<Moments, String> {
        if visitors < 2 {
            return Err("fewer than two visitors".into());
        }
        let n = visitors as f64;
        let (num_sum, num_sq) = num;
        let (den_sum, den_sq) = den;
        if den_sum <= 0.0 {
            return Err("no orders".into());
        }
        let mean_num = num_sum / n;
        let mean_den = den_sum / n;
        let var_num = ((num_sq - num_sum * num_sum / n) / (n - 1.0)).max(0.0);
        let var_den = ((den_sq - den_sum * den_sum / n) / (n - 1.0)).max(0.0);
        let covariance = (cross - num_sum * den_sum / n) / (n - 1.0);
        let mean = mean_num / mean_den;
        let terms = [
            var_num / mean_den.powi(2),
            -2.0 * covariance * mean_num / mean_den.powi(3),
            mean_num.powi(2) * var_den / mean_den.powi(4),
        ];
        let variance = terms.iter().sum::<f64>().max(0.0);
        let noise_scale = terms
            .iter()
            .map(|t| t.abs())
            .fold(num_sq.abs() / (n - 1.0) / mean_den.powi(2), f64::max);
        // As in gbstats, the ratio's variance is per visitor (the unit of randomisation).
        Ok(Moments {
            n,
            mean,
            variance,
            noise_scale,
        })
    }
}

/// The result of one treatment-vs-control test on one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    pub relative_lift: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    pub absolute_diff: f64,
    pub absolute_ci_low: f64,
    pub absolute_ci_high: f64,
    pub absolute_p_value: f64,
    pub degrees_of_freedom: f64,
    /// Standard error of the relative lift.
    pub relative_se: f64,
}

/// Welch–Satterthwaite degrees of freedom from the raw variances.
pub fn welch_df(control: &Moments, treatment: &Moments) -> f64 {
    let a = control.variance / control.n;
    let b = treatment.variance / treatment.n;
    (a + b).powi(2) / (a.powi(2) / (control.n - 1.0) + b.powi(2) / (treatment.n - 1.0))
}

/// Interval and two-sided p-value of one t statistic, with the critical value computed once
/// per comparison by the caller.
fn t_test(estimate: f64, se: f64, df: f64, critical: f64) -> (f64, f64, f64) {
    let p = dist::t_two_sided_p(estimate / se, df);
    (estimate - critical * se, estimate + critical * se, p)
}

/// Whether two arms can be compared at all (every engine asks the same): two visitors each,
/// no zero variance (control named first), a control mean that is not zero.
pub fn check_comparable(control: &Moments, treatment: &Moments) -> Result<(), TestError> {
    if control.n < 2.0 || treatment.n < 2.0 {
        return Err(TestError::Other(
            "fewer than two visitors in a variant".into(),
        ));
    }
    if control.has_zero_variance() {
        return Err(TestError::ZeroVariance(Arm::Control));
    }
    if treatment.has_zero_variance() {
        return Err(TestError::ZeroVariance(Arm::Treatment));
    }
    if control.mean == 0.0 {
        return Err(TestError::Other(
            "the control mean is zero: a relative lift is undefined".into(),
        ));
    }
    Ok(())
}

/// The relative lift `(mT - mC)/|mC|` and its delta-method variance
/// `sT²/(mC²·nT) + sC²·mT²/(mC⁴·nC)`.
pub fn relative_lift(control: &Moments, treatment: &Moments) -> (f64, f64) {
    let (mc, mt) = (control.mean, treatment.mean);
    let lift = (mt - mc) / mc.abs();
    let variance = treatment.variance / (mc.powi(2) * treatment.n)
        + control.variance * mt.powi(2) / (mc.powi(4) * control.n);
    (lift, variance)
}

/// Two-sided Welch t-tests of treatment against control, relative (delta method) and absolute.
pub fn compare(
    control: &Moments,
    treatment: &Moments,
    alpha: f64,
) -> Result<TestResult, TestError> {
    check_comparable(control, treatment)?;
    let (mc, mt) = (control.mean, treatment.mean);
    let (relative_lift, relative_var) = relative_lift(control, treatment);
    let relative_se = relative_var.sqrt();
    let absolute_diff = mt - mc;
    let absolute_se = (treatment.variance / treatment.n + control.variance / control.n).sqrt();
    let df = welch_df(control, treatment);
    if !(df.is_finite() && df > 0.0 && relative_se > 0.0 && absolute_se > 0.0) {
        return Err(TestError::Other("degenerate variances".into()));
    }
    let critical = dist::t_isf(alpha / 2.0, df);
    let (ci_low, ci_high, p_value) = t_test(relative_lift, relative_se, df, critical);
    let (absolute_ci_low, absolute_ci_high, absolute_p_value) =
        t_test(absolute_diff, absolute_se, df, critical);
    let result = TestResult {
        relative_lift,
        ci_low,
        ci_high,
        p_value,
        absolute_diff,
        absolute_ci_low,
        absolute_ci_high,
        absolute_p_value,
        degrees_of_freedom: df,
        relative_se,
    };
    let all = [
        result.relative_lift,
        result.ci_low,
        result.ci_high,
        result.p_value,
        result.absolute_ci_low,
        result.absolute_ci_high,
        result.absolute_p_value,
    ];
    if all.iter().all(|x| x.is_finite()) {
        Ok(result)
    } else {
        Err(TestError::Other(
            "the test is not computable on these numbers".into(),
        ))
    }
}

/// Sample ratio mismatch: chi-square goodness of fit of the observed visitors against the
/// intended weights. Returns (χ², p).
pub fn srm(observed: &[u64], weights: &[f64]) -> Result<(f64, f64), String> {
    if observed.len() < 2 || observed.len() != weights.len() {
        return Err("needs one weight per variant".into());
    }
    let total: f64 = observed.iter().map(|&o| o as f64).sum();
    let weight_sum: f64 = weights.iter().sum();
    if total <= 0.0 || weight_sum <= 0.0 {
        return Err("no visitors".into());
    }
    let chi2: f64 = observed
        .iter()
        .zip(weights)
        .map(|(&o, &w)| {
            let expected = total * w / weight_sum;
            (o as f64 - expected).powi(2) / expected
        })
        .sum();
    let p = dist::chi2_sf(chi2, (observed.len() - 1) as f64);
    if p.is_nan() {
        return Err("the chi-square statistic is not computable".into());
    }
    Ok((chi2, p.clamp(0.0, 1.0)))
}

fn z(quantile: f64) -> f64 {
    dist::normal_ppf(quantile)
}

/// Power of a two-sided z-test to detect `effect` with standard error `se`.
pub fn achieved_power(effect: f64, se: f64, alpha: f64) -> Result<f64, String> {
    if se.is_nan() || se <= 0.0 || !effect.is_finite() {
        return Err("no standard error".into());
    }
    let critical = dist::normal_isf(alpha / 2.0);
    let shift = effect.abs() / se;
    Ok((dist::normal_sf(critical - shift) + dist::normal_cdf(-critical - shift)).clamp(0.0, 1.0))
}

/// Visitors per arm to detect a relative change `relative_mde` of a proportion `baseline`
/// (two-sided `alpha`, `power`).
pub fn sample_size_proportion(
    baseline: f64,
    relative_mde: f64,
    alpha: f64,
    power: f64,
) -> Result<u64, String> {
    let p1 = baseline;
    let p2 = baseline * (1.0 + relative_mde);
    if !(p1 > 0.0 && p1 < 1.0 && p2 > 0.0 && p2 < 1.0) || relative_mde == 0.0 {
        return Err(format!(
            "baseline {p1} with a relative change of {relative_mde} is not a pair of proportions"
        ));
    }
    let p_bar = (p1 + p2) / 2.0;
    let za = z(1.0 - alpha / 2.0);
    let zb = z(power);
    let n = (za * (2.0 * p_bar * (1.0 - p_bar)).sqrt()
        + zb * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt())
    .powi(2)
        / (p2 - p1).powi(2);
    to_count(n)
}

/// Visitors per arm to detect an absolute change `delta` of a mean with standard deviation
/// `sigma`: `2(z₁₋α/₂+z₁₋β)²σ²/δ²`.
pub fn sample_size_mean(sigma: f64, delta: f64, alpha: f64, power: f64) -> Result<u64, String> {
    if sigma.is_nan() || sigma <= 0.0 || delta == 0.0 || !delta.is_finite() {
        return Err("needs a positive standard deviation and a non-zero effect".into());
    }
    let n = 2.0 * (z(1.0 - alpha / 2.0) + z(power)).powi(2) * sigma.powi(2) / delta.powi(2);
    to_count(n)
}

fn to_count(n: f64) -> Result<u64, String> {
    if n.is_finite() && n > 0.0 && n < 1e15 {
        Ok(n.ceil() as u64)
    } else {
        Err("the required sample size is not finite".into())
    }
}

#[cfg(test)]
mod tests {
    //! Reference values computed with scipy, statsmodels and gbstats: the published ones of the
    //! README's statistics section, and the tables in `tests/reference/` with their scripts.
    use super::*;

    fn close(actual: f64, expected: f64, rel: f64) {
        let tol = rel * expected.abs().max(1e-12);
        assert!(
            (actual - expected).abs() <= tol,
            "{actual} is not within {rel} (relative) of {expected}"
        );
    }

    #[test]
    fn proportions_match_gbstats() {
        let c = Moments::proportion(500, 10_000).unwrap();
        let t = Moments::proportion(560, 10_000).unwrap();
        let r = compare(&c, &t, 0.05).unwrap();
        close(r.relative_lift, 0.12, 1e-9);
        close(r.ci_low, -0.011456, 1e-4);
        close(r.ci_high, 0.251456, 1e-5);
        close(r.p_value, 0.0735868, 1e-5);
        close(r.degrees_of_freedom, 19941.0, 1e-5);
        close(r.absolute_ci_low, -0.000209597, 1e-5);
        close(r.absolute_ci_high, 0.0122096, 1e-5);
        close(r.absolute_p_value, 0.0582497, 1e-5);
    }

    #[test]
    fn revenue_per_visitor_matches_gbstats() {
        let c = Moments::sample_mean(25_000.0, 4_062_100.0, 10_000).unwrap();
        let t = Moments::sample_mean(28_500.0, 4_490_784.0, 10_000).unwrap();
        let r = compare(&c, &t, 0.05).unwrap();
        close(r.relative_lift, 0.14, 1e-9);
        close(r.ci_low, -0.10303, 1e-4);
        close(r.ci_high, 0.38303, 1e-5);
        close(r.p_value, 0.258858, 1e-5);
        close(r.absolute_ci_low, -0.218424, 1e-5);
        close(r.absolute_ci_high, 0.918424, 1e-5);
    }

    #[test]
    fn srm_matches_scipy() {
        let (chi2, p) = srm(&[10_000, 10_500], &[1.0, 1.0]).unwrap();
        close(chi2, 12.1951, 1e-5);
        close(p, 0.000479146, 1e-5);
        assert!(p < 0.001);
        let (_, p) = srm(&[10_000, 10_400], &[1.0, 1.0]).unwrap();
        close(p, 0.0051014, 1e-5);
        assert!(p >= 0.001);
        let (_, p) = srm(&[20_000, 10_400], &[2.0, 1.0]).unwrap();
        close(p, 0.00117687, 1e-5);
    }

    #[test]
    fn sample_size_matches_statsmodels() {
        assert_eq!(
            sample_size_proportion(0.05, 0.10, 0.05, 0.8).unwrap(),
            31_234
        );
    }

    #[test]
    fn degenerate_inputs_are_errors_not_nan() {
        assert!(Moments::proportion(0, 0).is_err());
        let zero = Moments::proportion(0, 1000).unwrap();
        assert!(compare(&zero, &zero, 0.05).is_err());
        let all = Moments::proportion(1000, 1000).unwrap();
        assert!(compare(&all, &all, 0.05).is_err());
        assert!(sample_size_proportion(0.0, 0.1, 0.05, 0.8).is_err());
        assert!(sample_size_mean(0.0, 1.0, 0.05, 0.8).is_err());
        assert!(srm(&[0, 0], &[1.0, 1.0]).is_err());
        assert!(achieved_power(0.1, 0.0, 0.05).is_err());
    }

    /// `tests/reference/gbstats_table.csv` (made by `make_gbstats_table.py` with gbstats 0.8):
    /// 51 tests from 20 to 10⁹ visitors per arm, lift, interval and p-value. Intervals to 1e-9
    /// of their width; p-values to 1e-8 relative (gbstats computes them as `1 − cdf`, so only
    /// to ~1e-16 absolute).
    #[test]
    fn matches_gbstats_from_20_to_a_billion_visitors() {
        let table = include_str!("../../tests/reference/gbstats_table.csv");
        let mut checked = 0;
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| f[i].parse::<f64>().unwrap();
            let count = |i: usize| f[i].parse::<u64>().unwrap();
            let (c, t) = match f[0] {
                "proportion" => (
                    Moments::proportion(num(2) as u64, count(1)).unwrap(),
                    Moments::proportion(num(5) as u64, count(4)).unwrap(),
                ),
                _ => (
                    Moments::sample_mean(num(2), num(3), count(1)).unwrap(),
                    Moments::sample_mean(num(5), num(6), count(4)).unwrap(),
                ),
            };
            let r = compare(&c, &t, 0.05).unwrap();
            let width = num(9) - num(8);
            for (name, ours, theirs) in [
                ("lift", r.relative_lift, num(7)),
                ("ci_low", r.ci_low, num(8)),
                ("ci_high", r.ci_high, num(9)),
            ] {
                assert!(
                    (ours - theirs).abs() <= 1e-9 * width,
                    "{line}: {name} {ours} vs gbstats {theirs}"
                );
            }
            let p = num(10);
            assert!(
                (r.p_value - p).abs() <= 1e-8 * p + 1e-14,
                "{line}: p {} vs gbstats {p}",
                r.p_value
            );
            checked += 1;
        }
        assert_eq!(checked, 51);
    }

    #[test]
    fn either_arm_with_zero_variance_is_named() {
        let control = Moments::proportion(500, 10_000).unwrap();
        let all = Moments::proportion(1_110_901, 1_110_901).unwrap();
        assert_eq!(
            compare(&control, &all, 0.05),
            Err(TestError::ZeroVariance(Arm::Treatment))
        );
        let none = Moments::proportion(0, 10_000).unwrap();
        assert_eq!(
            compare(&none, &control, 0.05),
            Err(TestError::ZeroVariance(Arm::Control))
        );
        // Average order value with one order of 49.9 per arm: the delta-method variance is
        // zero up to rounding, so the test is declined rather than given absurd ν.
        let one_order =
            |visitors| Moments::ratio((49.9, 49.9 * 49.9), (1.0, 1.0), 49.9, visitors).unwrap();
        let (c, t) = (one_order(1_000_003), one_order(999_989));
        assert!(c.has_zero_variance() && t.has_zero_variance());
        assert!(matches!(
            compare(&c, &t, 0.05),
            Err(TestError::ZeroVariance(Arm::Control))
        ));
        // Constant revenue per visitor (every visitor paid 10): rounding noise only.
        let n = 333_333u64;
        let constant = Moments::sample_mean(10.0 * n as f64, 100.0 * n as f64, n).unwrap();
        assert!(constant.has_zero_variance());
    }

    /// Sitewide tests: 10⁷, 10⁹ and 10¹² visitors per arm return at once, with intervals at
    /// the normal limit (ν is ~2·10⁷ to 2·10¹²: the t critical value is 1.959964 to ≤ 1e-7).
    #[test]
    fn sitewide_tests_return_with_normal_limit_intervals() {
        for n in [10_000_000u64, 1_000_000_000, 1_000_000_000_000] {
            let c = Moments::proportion(n / 20, n).unwrap();
            let t = Moments::proportion(n / 20 + n / 2_000, n).unwrap();
            let r = compare(&c, &t, 0.05).unwrap();
            let z = 1.959_963_984_540_054;
            let se = r.relative_se;
            close(r.ci_low, r.relative_lift - z * se, 1e-6);
            close(r.ci_high, r.relative_lift + z * se, 1e-6);
            // The interval and the p-value agree: the interval excludes 0 iff p < 0.05.
            assert_eq!(r.ci_low > 0.0, r.p_value < 0.05, "n={n}");
        }
    }

    #[test]
    fn tiny_p_values_are_not_zero() {
        let c = Moments::proportion(50_000, 1_000_000).unwrap();
        let t = Moments::proportion(60_000, 1_000_000).unwrap();
        let r = compare(&c, &t, 0.05).unwrap();
        assert!(r.p_value > 0.0 && r.p_value < 1e-100, "{}", r.p_value);
        // χ² = 784.3: p ≈ 1e-172, which `1 − cdf` printed as 0.
        let (_, p) = srm(&[1_000_000, 1_040_000], &[1.0, 1.0]).unwrap();
        assert!(p > 1e-175 && p < 1e-170, "{p}");
    }

    #[test]
    fn power_is_half_at_the_critical_effect() {
        let power = achieved_power(1.959963985, 1.0, 0.05).unwrap();
        close(power, 0.5, 1e-3);
    }
}
