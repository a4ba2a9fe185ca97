"""A synthetic experiment history for the analyze benchmark: N experiments, 2-4 arms, 20 to
5 000 000 visitors per arm (log-uniform), conversions, orders, revenue and its sum of squares
per visitor, over three years. Deterministic for a given N.

    python3 gen_history.py N > history.ndjson
"""
import json
import math
import random
import sys
from datetime import date, timedelta

MOMENTS = ["search", "product_detail", "cart_checkout", "post_purchase", "re_engagement"]
KPIS = ["conversion_rate"] * 6 + ["revenue_per_visitor"] * 2 + ["average_order_value"]


def experiment(i, rng):
    arms = rng.choice([2, 2, 2, 3, 4])
    n = int(math.exp(rng.uniform(math.log(20), math.log(5_000_000))))
    base = rng.uniform(0.01, 0.15)
    aov = rng.uniform(20.0, 120.0)
    variants = []
    broken_split = rng.random() < 0.05  # a sample ratio mismatch now and then
    for a in range(arms):
        visitors = max(20, int(n + rng.gauss(0.0, math.sqrt(n))))
        if broken_split and a == 1:
            visitors = int(visitors * 1.05) + 10
        p = min(0.99, base * (1 + (rng.gauss(0.0, 0.05) if a else 0.0)))
        conversions = max(1, min(visitors - 1, int(round(visitors * p + rng.gauss(0, 1)))))
        orders = conversions + int(conversions * rng.uniform(0.0, 0.05))
        revenue = orders * aov * rng.uniform(0.95, 1.05)
        # Order values spread around the mean: Σx² over visitors ≥ (Σx)²/visitors.
        revenue_sq = revenue * aov * rng.uniform(1.3, 2.5)
        variants.append({"name": "control" if a == 0 else f"treatment-{a}", "control": a == 0,
                         "visitors": visitors, "conversions": conversions, "orders": orders,
                         "revenue": round(revenue, 2), "revenue_sq": round(revenue_sq, 2)})
    start = date(2023, 1, 1) + timedelta(days=rng.randrange(0, 1000))
    return {"id": f"bench-{i:06d}", "name": f"Lever {i % 40} for segment {i % 12}",
            "moment": MOMENTS[i % 5], "lever": f"lever_{i % 40}", "segment": f"segment_{i % 12}",
            "primary_kpi": rng.choice(KPIS), "status": "concluded",
            "idea_at": str(start), "started_at": str(start + timedelta(days=20)),
            "ended_at": str(start + timedelta(days=41)), "decided_at": str(start + timedelta(days=48)),
            "decision": rng.choice(["ship", "rollback", "iterate"]),
            "attributed_revenue": round(rng.uniform(0, 50_000), 2), "variants": variants}


def main():
    count = int(sys.argv[1])
    rng = random.Random(count)
    out = sys.stdout
    for i in range(count):
        out.write(json.dumps(experiment(i, rng), separators=(",", ":")))
        out.write("\n")


if __name__ == "__main__":
    main()
