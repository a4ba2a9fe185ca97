"""Reference values for summary-only records pooled with full records in the lever knowledge
base (src/analysis/levers.rs; issue #24, DESIGN §12 "Summary-only records").

Run:  /work/venv/bin/python make_summary_only_table.py   (any venv with statsmodels >= 0.14)
Reads beside this file:
  summary_history.ndjson  a history mixing full records (per-arm sums) and summary-only
      records (a `summary` reported by another tool, visitors per arm, no sums).
Writes beside this file:
  summary_history.csv     the same history in the CSV import format (summary_* columns).
  summary_only_pools.csv  scope,key,k,effect,se,ci_low,ci_high,tau2,i2,q: every pool that
      `hypod levers --json` shows for that history: scope `lever` (key = lever), `lever_moment`
      and `lever_segment` (key = lever/moment, lever/segment), `moment` (key = moment, over
      all levers) and `overall`.
  summary_only_tests.csv  lever,id,effect,se: the tests that enter the pools.

What enters a pool (as src/analysis/levers.rs): a concluded test that names a lever, measures a
commercial KPI, and has a valid outcome (this history has no sample ratio mismatch and no
degenerate arm: the script checks it), with an effect and a standard error:
  - a full record: the relative lift (mT - mC)/|mC| of the conversion rate with its
    delta-method standard error sqrt(vT/(mC^2 nT) + vC mT^2/(mC^4 nC)), v = m(1 - m)
    (gbstats' frequentist engine, DESIGN §4);
  - a summary-only record: `relative_lift` with SE = (ci_high - ci_low)/(2 * 1.959963984540054)
    from its symmetric 95 % interval, or `effect` with its reported `standard_error`; a
    summary with only a p-value has no standard error and is not pooled.
Pools: statsmodels' combine_effects(effects, variances, method_re="dl") (DerSimonian-Laird,
the method the lever pools use), with the same conventions as make_levers_table.py: tau2 is
truncated at 0 (where statsmodels' is negative the pool is its fixed-effect result), and a
pool of one test is the test itself.
"""
import csv
import io
import json
import math
import os
import warnings

import numpy as np
from scipy.stats import chi2
from statsmodels.stats.meta_analysis import combine_effects

HERE = os.path.dirname(os.path.abspath(__file__))
Z_95 = 1.959963984540054
COMMERCIAL = {"conversion_rate", "revenue_per_visitor", "average_order_value",
              "repeat_purchase_rate"}


def read_history():
    with open(os.path.join(HERE, "summary_history.ndjson")) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_csv(history):
    exp_cols = ["id", "name", "moment", "lever", "segment", "primary_kpi", "status",
                "decided_at", "decision"]
    sum_cols = ["metric", "relative_lift", "ci_low", "ci_high", "p_value", "effect",
                "standard_error"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(exp_cols + ["summary_" + c for c in sum_cols]
                    + ["variant", "control", "visitors", "conversions"])
    for e in history:
        s = e.get("summary", {})
        for v in e["variants"]:
            writer.writerow([e.get(c, "") for c in exp_cols] + [s.get(c, "") for c in sum_cols]
                            + [v["name"], "true" if v["control"] else "false", v["visitors"],
                               v.get("conversions", "")])
    with open(os.path.join(HERE, "summary_history.csv"), "w", newline="") as f:
        f.write(out.getvalue())


def test_of(e):
    """(effect, standard error) of an experiment that enters the pools, else None."""
    if e["status"] == "running" or not e.get("lever") or e["primary_kpi"] not in COMMERCIAL:
        return None
    control = next(v for v in e["variants"] if v["control"])
    treatment = next(v for v in e["variants"] if not v["control"])
    stat, p_srm = chi2_srm(control["visitors"], treatment["visitors"])
    assert p_srm >= 0.001, (e["id"], "sample ratio mismatch")
    s = e.get("summary")
    if s is not None:
        if "standard_error" in s:
            return s["effect"], s["standard_error"]
        if "ci_low" in s:
            return s["relative_lift"], (s["ci_high"] - s["ci_low"]) / (2.0 * Z_95)
        return None
    n_c, n_t = float(control["visitors"]), float(treatment["visitors"])
    m_c, m_t = control["conversions"] / n_c, treatment["conversions"] / n_t
    assert 0 < m_c < 1 and 0 < m_t < 1, (e["id"], "degenerate arm")
    v_c, v_t = m_c * (1 - m_c), m_t * (1 - m_t)
    lift = (m_t - m_c) / abs(m_c)
    var = v_t / (m_c ** 2 * n_t) + v_c * m_t ** 2 / (m_c ** 4 * n_c)
    return lift, math.sqrt(var)


def chi2_srm(a, b):
    expected = (a + b) / 2.0
    stat = (a - expected) ** 2 / expected + (b - expected) ** 2 / expected
    return stat, chi2.sf(stat, 1)


def pool(effects, ses):
    y = np.array(effects)
    v = np.array([se * se for se in ses])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = combine_effects(y, v, method_re="dl")
        fe_ci = res.conf_int(use_t=False)[0]
        re_ci = res.conf_int(use_t=False)[1]
    if len(effects) == 1:
        return 1, res.mean_effect_fe, res.sd_eff_w_fe, fe_ci, 0.0, 0.0, 0.0
    if res.tau2 < 0:
        return (len(effects), res.mean_effect_fe, res.sd_eff_w_fe, fe_ci, 0.0,
                max(0.0, res.i2), res.q)
    return (len(effects), res.mean_effect_re, res.sd_eff_w_re, re_ci, res.tau2,
            max(0.0, res.i2), res.q)


def main():
    history = read_history()
    write_csv(history)
    tests = []
    for e in history:
        t = test_of(e)
        if t is not None:
            tests.append((e["lever"], e["id"], e["moment"], e["segment"], t[0], t[1]))
    groups = {}
    for lever, _, moment, segment, y, se in tests:
        for scope, key in [("lever", lever), ("lever_moment", f"{lever}/{moment}"),
                           ("lever_segment", f"{lever}/{segment}"), ("moment", moment),
                           ("overall", "")]:
            groups.setdefault((scope, key), []).append((y, se))
    rows = []
    for (scope, key), members in sorted(groups.items()):
        k, effect, se, ci, tau2, i2, q = pool([m[0] for m in members], [m[1] for m in members])
        rows.append([scope, key, k] + [repr(float(x)) for x in
                                       (effect, se, ci[0], ci[1], tau2, i2, q)])
    with open(os.path.join(HERE, "summary_only_pools.csv"), "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["scope", "key", "k", "effect", "se", "ci_low", "ci_high", "tau2", "i2",
                         "q"])
        writer.writerows(rows)
    with open(os.path.join(HERE, "summary_only_tests.csv"), "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["lever", "id", "effect", "se"])
        for lever, test_id, _, _, y, se in tests:
            writer.writerow([lever, test_id, repr(float(y)), repr(float(se))])
    print(f"wrote {len(rows)} pools over {len(tests)} tests")


if __name__ == "__main__":
    main()
