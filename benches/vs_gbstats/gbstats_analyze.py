"""The per-experiment statistics of `hypod analyze --json`, computed with GrowthBook's gbstats
0.8 (and scipy for the SRM chi-square), end to end: read the NDJSON history, test every
treatment against control on the primary KPI (relative and absolute two-sided t-tests), revenue
per visitor and average order value for the best treatment, SRM, and write one JSON document.

    python3 gbstats_analyze.py history.ndjson > out.json
"""
import json
import sys

from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import (ProportionStatistic, RatioStatistic,
                                       SampleMeanStatistic)
from scipy.stats import chisquare

RELATIVE = FrequentistConfig(alpha=0.05, difference_type="relative")
ABSOLUTE = FrequentistConfig(alpha=0.05, difference_type="absolute")


def stat(kpi, v):
    if kpi == "revenue_per_visitor":
        return SampleMeanStatistic(n=v["visitors"], sum=v["revenue"], sum_squares=v["revenue_sq"])
    if kpi == "average_order_value":
        return RatioStatistic(
            n=v["visitors"],
            m_statistic=SampleMeanStatistic(n=v["visitors"], sum=v["revenue"],
                                            sum_squares=v["revenue_sq"]),
            d_statistic=SampleMeanStatistic(n=v["visitors"], sum=v["orders"],
                                            sum_squares=v["orders"]),
            m_d_sum_of_products=v["revenue"])
    return ProportionStatistic(n=v["visitors"], sum=v["conversions"])


def test(kpi, control, treatment):
    a, b = stat(kpi, control), stat(kpi, treatment)
    rel = TwoSidedTTest(a, b, RELATIVE).compute_result()
    ab = TwoSidedTTest(a, b, ABSOLUTE).compute_result()
    return {"kpi": kpi, "treatment": treatment["name"], "relative_lift": rel.expected,
            "ci_low": rel.ci[0], "ci_high": rel.ci[1], "p_value": rel.p_value,
            "absolute_diff": ab.expected, "absolute_ci_low": ab.ci[0],
            "absolute_ci_high": ab.ci[1], "absolute_p_value": ab.p_value}


def main():
    experiments = []
    with open(sys.argv[1]) as f:
        for line in f:
            e = json.loads(line)
            variants = e["variants"]
            control = next(v for v in variants if v["control"])
            treatments = [test(e["primary_kpi"], control, v) for v in variants if not v["control"]]
            best = min(range(len(treatments)), key=lambda i: treatments[i]["p_value"])
            best_variant = [v for v in variants if not v["control"]][best]
            visitors = [v["visitors"] for v in variants]
            srm = chisquare(visitors)
            experiments.append({
                "id": e["id"], "srm_p_value": float(srm.pvalue), "primary": treatments[best],
                "revenue_per_visitor": test("revenue_per_visitor", control, best_variant),
                "average_order_value": test("average_order_value", control, best_variant),
                "treatments": treatments})
    json.dump({"experiments": experiments}, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
