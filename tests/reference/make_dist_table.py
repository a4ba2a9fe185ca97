"""Reference values for hypod's distribution functions (src/analysis/dist.rs), from scipy.

Run:  python3 -m venv venv && venv/bin/pip install scipy && venv/bin/python make_dist_table.py
Writes dist_table.csv beside this file: kind,df,x,value,source with 17 significant digits, where
  t_sf    value = scipy.stats.t.sf(x, df)     (df = inf: the normal)
  t_ppf   value = scipy.stats.t.ppf(x, df)
  t_isf   value = scipy.stats.t.isf(x, df)
  chi2_sf value = scipy.stats.chi2.sf(x, df)
Rows whose value underflows to 0 or is not finite are left out.

Each scipy value with df ≤ 1000 is confirmed with mpmath at 50 digits (the regularised
incomplete beta and gamma functions; a quantile by the tail probability at scipy's answer,
a 1e-12 relative error in the probability allowed per unit of its elasticity). Where scipy itself is off by more than 1e-12 — scipy 1.17 gives
t.sf(1e-8, 1) = 0.49999999526 for 0.49999999682, and t.isf(1e-300, 1.5) = 8.2e153 for
5.2e199 (7 rows in all, printed when this runs) — the row carries mpmath's value and the source column says so.
Needs: scipy, mpmath.
"""
import csv
import math
import os

import mpmath as mp
import scipy
from scipy import stats

mp.mp.dps = 50

DFS = [1, 1.5, 2, 2.5, 3, 4, 5, 7.3, 10, 14.9, 15, 20, 29.5, 30, 31, 45.7, 64, 100, 250,
       1000, 5_000, 20_000, 57_000, 100_000, 1e6, 5_915_140, 1e7, 1.44e7, 2.5e7, 1e8, 1e9,
       1e10, 1e11, 1e12, math.inf]
TS = [1e-8, 1e-3, 0.05, 0.3, 0.5, 0.9, 1.0, 1.5, 1.96, 2.2, 2.6, 3.0, 4.0, 5.0, 6.5, 8.0,
      10.0, 13.0, 20.0, 30.0, 37.0, 50.0, 100.0, 1e3, 1e5, 1e10, 1e50, 1e150]
PS = [1e-300, 1e-200, 1e-100, 1e-50, 1e-20, 1e-12, 1e-8, 1e-5, 1e-3, 0.01, 0.025, 0.05,
      0.1, 0.2, 0.3, 0.4, 0.49, 0.5, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.999]
CHI_DFS = [1, 2, 3, 4, 5, 7, 10, 19]
CHI_XS = [1e-6, 0.01, 0.5, 1.0, 2.0, 3.84, 6.0, 10.0, 12.1951, 20.0, 50.0, 100.0, 300.0,
          700.0, 1000.0, 1300.0]


def rows():
    for df in DFS:
        for t in TS:
            v = stats.norm.sf(t) if df == math.inf else stats.t.sf(t, df)
            yield "t_sf", df, t, v
        for p in PS:
            v = stats.norm.ppf(p) if df == math.inf else stats.t.ppf(p, df)
            yield "t_ppf", df, p, v
            if p < 0.5:
                v = stats.norm.isf(p) if df == math.inf else stats.t.isf(p, df)
                yield "t_isf", df, p, v
    for k in CHI_DFS:
        for x in CHI_XS:
            yield "chi2_sf", k, x, stats.chi2.sf(x, k)


def exact_sf(kind, df, x):
    x = mp.mpf(x)
    if kind == "chi2_sf":
        return mp.gammainc(mp.mpf(df) / 2, x / 2, mp.inf, regularized=True)
    if df == math.inf:
        return mp.erfc(x / mp.sqrt(2)) / 2
    n = mp.mpf(df)
    if x < 0:
        return 1 - exact_sf(kind, df, -x)
    return mp.betainc(n / 2, mp.mpf(1) / 2, 0, n / (n + x * x), regularized=True) / 2


def exact(kind, df, x):
    """mpmath's value of the row: the function itself, or the root of sf(t) = q."""
    if kind in ("t_sf", "chi2_sf"):
        return exact_sf(kind, df, x)
    # The positive root u of sf(u) = q, q the smaller tail; the sign from the side of x.
    q = min(mp.mpf(x), 1 - mp.mpf(x))
    if q == 0.5:
        return mp.mpf(0)
    sign = 1 if (kind == "t_isf") == (x < 0.5) else -1
    # Bisection on log u: sf is monotone; 400 halvings of [e^-70, e^700].
    lo, hi = mp.mpf(-70), mp.mpf(700)
    for _ in range(400):
        mid = (lo + hi) / 2
        if exact_sf("t_sf", df, mp.exp(mid)) > q:
            lo = mid
        else:
            hi = mid
    return sign * mp.exp((lo + hi) / 2)


def agrees(kind, df, x, v):
    """Whether scipy's value is right to ~1e-12, by one mpmath evaluation."""
    if kind in ("t_sf", "chi2_sf"):
        return abs(mp.mpf(v) / exact_sf(kind, df, x) - 1) <= 1e-12
    # isf: sf(v) = x; ppf: P(T <= v) = x, i.e. sf(-v) = x.
    q = mp.mpf(x)
    t = mp.mpf(v) if kind == "t_isf" else -mp.mpf(v)
    if t == 0:
        return q == 0.5
    # d ln sf / d ln t at t: a relative error e in t moves sf by about e·elasticity.
    sf = exact_sf("t_sf", df, t)
    n = mp.mpf(df)
    pdf = mp.gamma((n + 1) / 2) / (mp.gamma(n / 2) * mp.sqrt(n * mp.pi)) * (1 + t * t / n) ** (-(n + 1) / 2)
    elasticity = abs(t * pdf / sf)
    return abs(sf / q - 1) <= 1e-12 * max(elasticity, 1)


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_table.csv")
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["kind", "df", "x", "value", "source"])
        replaced = 0
        for kind, df, x, v in rows():
            if v == 0 or not math.isfinite(v):
                continue
            source = "scipy"
            if df <= 1000 and not agrees(kind, df, x, v):
                truth = exact(kind, df, x)
                print(f"scipy is off: {kind}(x={x}, df={df}) = {v}, mpmath {mp.nstr(truth, 17)}")
                v, source = float(truth), "mpmath"
                replaced += 1
            out.writerow([kind, "inf" if df == math.inf else repr(float(df)), repr(float(x)),
                          repr(float(v)), source])
    print(f"wrote {path} with scipy {scipy.__version__}, mpmath {mp.__version__}: "
          f"{replaced} rows from mpmath where scipy is off")


if __name__ == "__main__":
    main()
