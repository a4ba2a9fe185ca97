"""Reference values for the lever knowledge base (src/analysis/levers.rs): DerSimonian-Laird
random-effects pools from statsmodels' combine_effects(method_re="dl").

Run:  /work/venv/bin/python make_levers_table.py   (any venv with statsmodels >= 0.14)
Writes beside this file:
  levers_table.csv  effects,variances,effect,se,ci_low,ci_high,tau2,i2,q,shrunk_effect,shrunk_se
      effects and variances |-separated (k from 1 to 40 tests, relative lifts of a few percent
      with standard errors from 0.002 to 0.1, as experiment histories give them).
      effect/se/ci are the random-effects mean, its standard deviation and the normal 95 %
      interval (res.mean_effect_re, res.sd_eff_w_re, res.conf_int(use_t=False)[1]); tau2 and
      i2 from res.tau2 and res.i2; q from res.q.
      DerSimonian-Laird truncate tau2 at 0 (DerSimonian & Laird 1986; metafor does); statsmodels
      does not (a negative tau2 when Q < k-1). Where it is negative the reference is
      combine_effects(...) again with the tau2 = 0 pool, i.e. its fixed-effect results
      (mean_effect_fe, sd_eff_w_fe, conf_int(use_t=False)[0]), tau2 = 0 and i2 = max(0, i2).
      With one test (k = 1) statsmodels divides by zero: the pool is the test (its fixed-effect
      results), tau2 = 0, i2 = 0, q = 0.
      shrunk_effect and shrunk_se: the first test shrunk toward the pool (empirical Bayes),
      mu + B (y1 - mu) and sqrt(B v1) with B = tau2 / (tau2 + v1), from the statsmodels values.
"""
import csv
import math
import os
import random
import warnings

import numpy as np
from statsmodels.stats.meta_analysis import combine_effects

HERE = os.path.dirname(os.path.abspath(__file__))


def cases():
    rng = random.Random(20261201)
    for case in range(60):
        k = [1, 2, 3, 5, 8, 13, 40][case % 7]
        tau = [0.0, 0.005, 0.02, 0.06][case % 4]
        mean = rng.uniform(-0.05, 0.08)
        effects, variances = [], []
        for _ in range(k):
            se = math.exp(rng.uniform(math.log(0.002), math.log(0.1)))
            effects.append(rng.gauss(mean, math.sqrt(se * se + tau * tau)))
            variances.append(se * se)
        yield effects, variances


def main():
    rows = []
    for effects, variances in cases():
        y, v = np.array(effects), np.array(variances)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = combine_effects(y, v, method_re="dl")
            fe_ci = res.conf_int(use_t=False)[0]
            re_ci = res.conf_int(use_t=False)[1]
        k = len(effects)
        if k == 1:
            effect, se, ci, tau2, i2, q = res.mean_effect_fe, res.sd_eff_w_fe, fe_ci, 0.0, 0.0, 0.0
        elif res.tau2 < 0:
            effect, se, ci, tau2 = res.mean_effect_fe, res.sd_eff_w_fe, fe_ci, 0.0
            i2, q = max(0.0, res.i2), res.q
        else:
            effect, se, ci, tau2, i2, q = (
                res.mean_effect_re, res.sd_eff_w_re, re_ci, res.tau2, max(0.0, res.i2), res.q)
        b = tau2 / (tau2 + variances[0])
        shrunk_effect = effect + b * (effects[0] - effect)
        shrunk_se = math.sqrt(b * variances[0])
        rows.append([
            "|".join(repr(float(x)) for x in effects),
            "|".join(repr(float(x)) for x in variances),
            repr(float(effect)), repr(float(se)), repr(float(ci[0])), repr(float(ci[1])),
            repr(float(tau2)), repr(float(i2)), repr(float(q)),
            repr(float(shrunk_effect)), repr(float(shrunk_se)),
        ])
    with open(os.path.join(HERE, "levers_table.csv"), "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["effects", "variances", "effect", "se", "ci_low", "ci_high", "tau2",
                         "i2", "q", "shrunk_effect", "shrunk_se"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows")


if __name__ == "__main__":
    main()
