"""Reference tests for hypod's statistics (src/analysis/stats.rs, src/analysis/mod.rs), from
GrowthBook's gbstats 0.8 (frequentist two-sided t-test, relative effect) and statsmodels.

Run:  python3 -m venv venv && venv/bin/pip install gbstats==0.8.0 statsmodels
      venv/bin/python make_gbstats_table.py
Writes beside this file:
  gbstats_table.csv  kind,n_c,sum_c,sumsq_c,n_t,sum_t,sumsq_t,lift,ci_low,ci_high,p_value
      kind = proportion (sum = conversions) or mean (sum, sum of squares per visitor); from
      20 to 10^9 visitors per arm, so the sitewide tests (nu up to ~2e9) are in it.
  sitewide.csv  n,conversions_c,conversions_t,lift,ci_low,ci_high,p_value: conversion tests
      with 10^7, 10^9 and 10^12 visitors per arm. The interval at the normal limit
      (scipy.stats.norm): the t quantile at nu ~ 2n is the normal one to ~1e-8. The p-value
      from scipy.stats.t.sf at the Welch degrees of freedom (in the tail, t and normal still
      differ by ~t^4/(4 nu) relative: 1e-5 at n = 10^7).
  multiple_comparisons.csv  method,p_values (|-separated),adjusted (|-separated)
      statsmodels.stats.multitest.multipletests with method holm and fdr_bh.
"""
import csv
import os
import random

from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, SampleMeanStatistic
from statsmodels.stats.multitest import multipletests

HERE = os.path.dirname(os.path.abspath(__file__))


def cases():
    rng = random.Random(20261201)
    # Proportions: small to sitewide.
    for n in [20, 150, 1_000, 10_000, 80_000, 500_000, 2_500_000, 5_000_000, 7_250_000,
              10_000_000, 50_000_000, 1_000_000_000]:
        for _ in range(3):
            base = rng.uniform(0.01, 0.2)
            lift = rng.uniform(-0.05, 0.08)
            n_t = int(n * rng.uniform(0.98, 1.02))
            x_c = max(1, round(n * base))
            x_t = max(1, min(n_t - 1, round(n_t * base * (1 + lift))))
            yield "proportion", n, x_c, x_c, n_t, x_t, x_t
    # Means (revenue per visitor): sums and sums of squares over visitors.
    for n in [30, 2_000, 40_000, 1_000_000, 20_000_000]:
        for _ in range(3):
            mean = rng.uniform(1.0, 5.0)
            sd = rng.uniform(5.0, 40.0)
            lift = rng.uniform(-0.05, 0.1)
            n_t = int(n * rng.uniform(0.98, 1.02))
            s_c = mean * n
            ss_c = (sd * sd * (n - 1)) + s_c * s_c / n
            m_t = mean * (1 + lift)
            s_t = m_t * n_t
            ss_t = (sd * sd * (n_t - 1)) + s_t * s_t / n_t
            yield "mean", n, s_c, ss_c, n_t, s_t, ss_t


def statistic(kind, n, s, ss):
    if kind == "proportion":
        return ProportionStatistic(n=n, sum=s)
    return SampleMeanStatistic(n=n, sum=s, sum_squares=ss)


def main():
    config = FrequentistConfig(alpha=0.05, difference_type="relative")
    with open(os.path.join(HERE, "gbstats_table.csv"), "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["kind", "n_c", "sum_c", "sumsq_c", "n_t", "sum_t", "sumsq_t", "lift",
                      "ci_low", "ci_high", "p_value"])
        count = 0
        for kind, n_c, s_c, ss_c, n_t, s_t, ss_t in cases():
            r = TwoSidedTTest(statistic(kind, n_c, s_c, ss_c), statistic(kind, n_t, s_t, ss_t),
                              config).compute_result()
            assert r.error_message is None, r.error_message
            out.writerow([kind, n_c, repr(float(s_c)), repr(float(ss_c)), n_t, repr(float(s_t)),
                          repr(float(ss_t)), repr(float(r.expected)), repr(float(r.ci[0])),
                          repr(float(r.ci[1])), repr(float(r.p_value))])
            count += 1
    import numpy as np
    from scipy.stats import norm, t as student
    with open(os.path.join(HERE, "sitewide.csv"), "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["n", "conversions_c", "conversions_t", "lift", "ci_low", "ci_high",
                      "p_value"])
        for n in [10**7, 10**9, 10**12]:
            x_c, x_t = n // 20, n // 20 + n // 2000
            m_c, m_t = x_c / n, x_t / n
            v_c, v_t = m_c * (1 - m_c), m_t * (1 - m_t)
            lift = (m_t - m_c) / m_c
            se = np.sqrt(v_t / (m_c**2 * n) + v_c * m_t**2 / (m_c**4 * n))
            z = norm.isf(0.025)
            a, b = v_c / n, v_t / n
            dof = (a + b) ** 2 / (a * a / (n - 1) + b * b / (n - 1))
            out.writerow([n, x_c, x_t, repr(lift), repr(lift - z * se), repr(lift + z * se),
                          repr(float(2 * student.sf(abs(lift / se), dof)))])
    p_sets = [[0.01, 0.04, 0.03, 0.2], [0.001, 0.049, 0.6], [0.02, 0.02], [0.5, 0.01, 0.04, 0.03]]
    with open(os.path.join(HERE, "multiple_comparisons.csv"), "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["method", "p_values", "adjusted"])
        for method, name in [("holm", "holm"), ("fdr_bh", "benjamini_hochberg")]:
            for ps in p_sets:
                adjusted = multipletests(ps, method=method)[1]
                out.writerow([name, "|".join(repr(p) for p in ps),
                              "|".join(repr(float(a)) for a in adjusted)])
    print(f"wrote {count} gbstats tests and {2 * len(p_sets)} multiple-comparison sets")


if __name__ == "__main__":
    main()
