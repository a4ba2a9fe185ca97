"""Reference tables for hypod's Bayesian engine and sequential intervals
(src/analysis/engines.rs), computed by GrowthBook's gbstats 0.8 itself.

Run:  python3 -m venv venv && venv/bin/pip install gbstats==0.8.0 scipy
      venv/bin/python make_bayesian_table.py
Writes bayesian_table.json beside this file:
  {"gbstats": "0.8.0",
   "bayesian": [{"name", "kind", "control": {n, sum, sum_squares}, "treatment": {...},
                 "prior": null | {"mean", "stddev"}, "inverse": bool,
                 "error": null | gbstats' error message,
                 "chance_to_win", "ci_low", "ci_high", "mean", "stddev",
                 "risk_control", "risk_treatment"}],
   "sequential": [{"name", "kind", "control", "treatment", "tuning",
                   "difference": "relative" | "absolute",
                   "error", "estimate", "ci_low", "ci_high", "p_value"}]}
  kind = proportion (sum = conversions) or mean (sum and sum of squares over visitors).
  Bayesian: gbstats.bayesian.tests.EffectBayesianABTest, relative effect, prior on the relative
  scale (GaussianPrior(mean, stddev**2, proper=True)), alpha 0.05; `risk_control` and
  `risk_treatment` are gbstats' `risk[0]` and `risk[1]` (already swapped for inverse metrics).
  Sequential: gbstats.frequentist.tests.SequentialTwoSidedTTest, alpha 0.05.
Cases: a flat prior from 2 to 10^9 visitors per arm, proper priors, inverse metrics,
extreme effects (|mean/stddev| from 30 to ~1000, where the tails underflow), zero variance
and tiny samples, and the sequential test at several sizes and tunings.
"""
import json
import math
import os
import random
import warnings

import gbstats
from gbstats.bayesian.tests import (
    EffectBayesianABTest,
    EffectBayesianConfig,
    GaussianPrior,
)
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, SampleMeanStatistic

HERE = os.path.dirname(os.path.abspath(__file__))
# gbstats' sequential p-value is 1/exp(...), which overflows (to p = 0) for huge effects.
warnings.filterwarnings("ignore", category=RuntimeWarning)


def arm(kind, n, s, ss=None):
    if kind == "proportion":
        return {"n": n, "sum": s, "sum_squares": s}
    return {"n": n, "sum": s, "sum_squares": ss}


def statistic(kind, a):
    if kind == "proportion":
        return ProportionStatistic(n=a["n"], sum=a["sum"])
    return SampleMeanStatistic(n=a["n"], sum=a["sum"], sum_squares=a["sum_squares"])


def mean_arm(rng, n, mean, sd):
    s = mean * n
    ss = sd * sd * (n - 1) + s * s / n
    return arm("mean", n, s, ss)


def comparisons():
    """(name, kind, control, treatment) pairs shared by the tables."""
    rng = random.Random(20261205)
    yield "design reference", "proportion", arm("proportion", 10_000, 500), arm("proportion", 10_000, 560)
    yield "revenue reference", "mean", arm("mean", 10_000, 25_000.0, 4_062_100.0), arm(
        "mean", 10_000, 28_500.0, 4_490_784.0
    )
    for n in [2, 3, 20, 150, 1_000, 10_000, 80_000, 1_000_000, 10_000_000, 1_000_000_000]:
        for i in range(3):
            base = rng.uniform(0.02, 0.3)
            lift = rng.uniform(-0.08, 0.1)
            n_t = max(2, int(n * rng.uniform(0.98, 1.02)))
            x_c = max(1, min(n - 1, round(n * base)))
            x_t = max(1, min(n_t - 1, round(n_t * base * (1 + lift))))
            yield f"proportion n={n} #{i}", "proportion", arm("proportion", n, x_c), arm(
                "proportion", n_t, x_t
            )
    for n in [30, 2_000, 40_000, 1_000_000]:
        for i in range(2):
            mean = rng.uniform(1.0, 5.0)
            sd = rng.uniform(5.0, 40.0)
            lift = rng.uniform(-0.06, 0.1)
            n_t = int(n * rng.uniform(0.98, 1.02))
            yield f"mean n={n} #{i}", "mean", mean_arm(rng, n, mean, sd), mean_arm(
                rng, n_t, mean * (1 + lift), sd * rng.uniform(0.9, 1.1)
            )


def extremes():
    """Effects far in the tails: mean/stddev from about ±30 to ±1000."""
    for n, c, t in [
        (1_000_000, 50_000, 60_500),     # z ~ +31
        (1_000_000, 50_000, 63_000),     # z ~ +37.5, P(X < 0) subnormal
        (1_000_000, 50_000, 64_000),     # z ~ +40, P(X < 0) underflows
        (1_000_000, 60_500, 50_000),     # z ~ -37
        (1_000_000, 64_000, 50_000),     # z ~ -46
        (1_000_000, 50_000, 100_000),    # z ~ +94
        (1_000_000, 100_000, 50_000),    # z ~ -189
        (100_000_000, 1_000_000, 2_000_000),  # z ~ +940
    ]:
        yield f"extreme {c}/{n} vs {t}/{n}", "proportion", arm("proportion", n, c), arm(
            "proportion", n, t
        )


def degenerate():
    """What gbstats declines: zero variance in either arm, a zero baseline, one visitor."""
    yield "zero conversions in control", "proportion", arm("proportion", 100, 0), arm("proportion", 100, 5)
    yield "100 % conversion in treatment", "proportion", arm("proportion", 1_000, 50), arm(
        "proportion", 1_000, 1_000
    )
    yield "one visitor per arm", "proportion", arm("proportion", 1, 1), arm("proportion", 1, 0)
    yield "constant revenue", "mean", arm("mean", 50, 500.0, 5_000.0), arm("mean", 50, 600.0, 9_000.0)


def bayesian_case(name, kind, c, t, prior, inverse):
    if prior is None:
        effect = GaussianPrior()
    else:
        effect = GaussianPrior(mean=prior["mean"], variance=prior["stddev"] ** 2, proper=True)
    config = EffectBayesianConfig(inverse=inverse, prior_effect=effect)
    r = EffectBayesianABTest(statistic(kind, c), statistic(kind, t), config).compute_result()
    out = {
        "name": name,
        "kind": kind,
        "control": c,
        "treatment": t,
        "prior": prior,
        "inverse": inverse,
        "error": r.error_message,
        "chance_to_win": float(r.chance_to_win),
        "ci_low": float(r.ci[0]),
        "ci_high": float(r.ci[1]),
        "mean": float(r.uplift.mean),
        "stddev": float(r.uplift.stddev),
        "risk_control": float(r.risk[0]),
        "risk_treatment": float(r.risk[1]),
    }
    for key in ["chance_to_win", "ci_low", "ci_high", "mean", "stddev", "risk_control", "risk_treatment"]:
        assert math.isfinite(out[key]), (name, key, out[key])
    return out


def sequential_case(name, kind, c, t, tuning, difference):
    config = SequentialConfig(sequential_tuning_parameter=tuning, difference_type=difference)
    r = SequentialTwoSidedTTest(statistic(kind, c), statistic(kind, t), config).compute_result()
    return {
        "name": name,
        "kind": kind,
        "control": c,
        "treatment": t,
        "tuning": tuning,
        "difference": difference,
        "error": r.error_message,
        "estimate": float(r.expected),
        "ci_low": float(r.ci[0]),
        "ci_high": float(r.ci[1]),
        "p_value": float(r.p_value),
    }


def main():
    bayesian = []
    base = list(comparisons())
    for name, kind, c, t in base:
        bayesian.append(bayesian_case(f"flat, {name}", kind, c, t, None, False))
    for prior in [{"mean": 0.0, "stddev": 0.3}, {"mean": 0.02, "stddev": 0.05}, {"mean": -0.01, "stddev": 0.01}]:
        for name, kind, c, t in base[:2] + base[8:26:3]:
            label = f"prior N({prior['mean']}, {prior['stddev']}^2), {name}"
            bayesian.append(bayesian_case(label, kind, c, t, prior, False))
    for name, kind, c, t in base[:2] + base[5:30:4]:
        bayesian.append(bayesian_case(f"inverse, {name}", kind, c, t, None, True))
        bayesian.append(
            bayesian_case(f"inverse, prior N(0, 0.3^2), {name}", kind, c, t, {"mean": 0.0, "stddev": 0.3}, True)
        )
    for name, kind, c, t in extremes():
        bayesian.append(bayesian_case(f"flat, {name}", kind, c, t, None, False))
        bayesian.append(bayesian_case(f"inverse, {name}", kind, c, t, None, True))
        bayesian.append(bayesian_case(f"prior N(0, 0.3^2), {name}", kind, c, t, {"mean": 0.0, "stddev": 0.3}, False))
    for name, kind, c, t in degenerate():
        bayesian.append(bayesian_case(name, kind, c, t, None, False))
    # The command-line tests' lower-is-better KPI (tests/cli/engines.rs): bounces 3000 -> 2800.
    bounce_c, bounce_t = arm("proportion", 10_000, 3_000), arm("proportion", 10_000, 2_800)
    bayesian.append(bayesian_case("inverse, bounce rate", "proportion", bounce_c, bounce_t, None, True))

    sequential = []
    rng = random.Random(29)
    for n in [100, 1_000, 10_000, 100_000, 1_000_000, 100_000_000]:
        for tuning in [500, 5_000, 50_000]:
            base_rate = rng.uniform(0.03, 0.2)
            # A fixed-horizon z of 0 to 9: the sequential p-value from 1 down to tiny.
            z = rng.choice([0.0, 1.5, 3.0, -4.0, 5.0, 9.0])
            lift = z * math.sqrt(2 * (1 - base_rate) / (n * base_rate))
            x_c = round(n * base_rate)
            x_t = max(1, min(n - 1, round(n * base_rate * (1 + lift))))
            c, t = arm("proportion", n, x_c), arm("proportion", n, x_t)
            for difference in ["relative", "absolute"]:
                sequential.append(
                    sequential_case(f"n={n} tuning={tuning}", "proportion", c, t, tuning, difference)
                )
    for name, kind, c, t in base[:2] + base[-8:]:
        for difference in ["relative", "absolute"]:
            sequential.append(sequential_case(name, kind, c, t, 5_000, difference))
    for name, kind, c, t in list(extremes())[:3]:
        for difference in ["relative", "absolute"]:
            sequential.append(sequential_case(name, kind, c, t, 5_000, difference))

    path = os.path.join(HERE, "bayesian_table.json")
    with open(path, "w") as f:
        json.dump(
            {"gbstats": gbstats.__version__ if hasattr(gbstats, "__version__") else "0.8.0",
             "bayesian": bayesian, "sequential": sequential},
            f,
            indent=1,
        )
        f.write("\n")
    print(f"{path}: {len(bayesian)} Bayesian and {len(sequential)} sequential cases")


if __name__ == "__main__":
    main()
