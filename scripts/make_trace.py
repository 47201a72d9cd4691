#!/usr/bin/env python3
"""Writes a synthetic carbon-intensity trace (docs/curtailment.md): a CSV with an ISO 8601
timestamp column and one column per region, in gCO2/kWh, the shape of public marginal-emissions
exports. Deterministic: the same arguments give the same bytes.

Each region has a base intensity with a slow daily swing, a curtailment dip (surplus renewable
power: solar around midday, wind at night) centred at its own hour, and small seeded noise:

  intensity(t) = base * (1 + 0.15 sin(2 pi (h - 6) / 24)) * (1 - depth * exp(-((h - centre)/width)^2 / 2))
                 + noise,  clipped at 5

  scripts/make_trace.py --out intensity.csv            # 18 h of 5-minute rows, 3 regions
"""
import argparse
import datetime
import math
import random

# region: (base gCO2/kWh, dip centre hour, dip width h, dip depth)
REGIONS = {
    "CAISO_NORTH": (320.0, 12.0, 2.0, 0.85),  # solar: midday
    "SPP_TX": (450.0, 3.0, 2.5, 0.85),  # wind: night
    "PJM_WEST": (520.0, 17.0, 1.5, 0.85),  # evening wind
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--hours", type=float, default=18)
    ap.add_argument("--step-min", type=float, default=5)
    ap.add_argument("--start", default="2024-05-01T00:00:00Z")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = datetime.datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    rng = random.Random(args.seed)
    rows = int(round(args.hours * 60 / args.step_min))
    with open(args.out, "w") as f:
        f.write("point_time," + ",".join(REGIONS) + "\n")
        for i in range(rows):
            t = start + datetime.timedelta(minutes=i * args.step_min)
            h = (t - start.replace(hour=0, minute=0, second=0)).total_seconds() / 3600
            cells = []
            for base, centre, width, depth in REGIONS.values():
                d = min(abs(h - centre), 24 - abs(h - centre))  # the dip comes back every day
                v = base * (1 + 0.15 * math.sin(2 * math.pi * (h - 6) / 24))
                v *= 1 - depth * math.exp(-0.5 * (d / width) ** 2)
                v = max(5.0, v + rng.gauss(0, 6))
                cells.append(f"{v:.1f}")
            f.write(t.strftime("%Y-%m-%dT%H:%M:%SZ") + "," + ",".join(cells) + "\n")
    print(f"wrote {args.out}: {rows} rows of {args.step_min:g} min, regions {', '.join(REGIONS)}")


if __name__ == "__main__":
    main()
