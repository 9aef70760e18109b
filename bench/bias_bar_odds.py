"""How often would a *perfect* model of the web corpus pass issue #3's bias bar?

    python bench/bias_bar_odds.py            # seconds; reads bench/results/world_quality*.json

The bar: for neutral occupation prompts, TV(generated tone shares, web) <= 0.10 for every
occupation, on n = 200 images each. A perfect model under classifier-free guidance w draws
p(tone|c)^w p(tone)^(1-w) / Z (``guidance_tilt``), and 200 draws add sampling noise, so even it
passes only by chance. This prints that chance (Monte Carlo) per guidance scale, beside the base
model's measured TVs where bench/world_quality.py has measured them at that scale.
Writes bench/results/bias_bar_odds.json.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import date
from pathlib import Path

import numpy as np

from equigen.audit.metrics import chance_all_within_tv, guidance_tilt, total_variation
from equigen.world.distributions import declared


def measured_tvs(results: list[Path]) -> dict[float, dict]:
    """Per guidance scale, the base model's per-occupation TV to web and its sample size."""
    found: dict[float, dict] = {}
    for path in results:
        for scale, block in json.loads(path.read_text()).get("tone_bias", {}).items():
            found[float(scale)] = {"file": path.name,
                                   "tv": {o: round(v["tv_to_web"][0], 3) for o, v in block.items()},
                                   "n": min(v["n"] for v in block.values())}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", type=float, nargs="+",
                        default=[1.0, 1.1, 1.25, 1.5, 2.0, 4.0])
    parser.add_argument("--n", type=int, default=200, help="images per occupation")
    parser.add_argument("--bar", type=float, default=0.10)
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bias_bar_odds.json"))
    args = parser.parse_args()

    web = declared("web")
    targets = [np.asarray(t, float) for t in web.tone_given_occupation]
    measured = measured_tvs(sorted(Path("bench/results").glob("world_quality*.json")))
    rows = []
    for scale in args.guidance:
        perfect = [guidance_tilt(t, web.tone, scale) for t in targets]
        each = [chance_all_within_tv([p], [t], args.n, args.bar, args.trials)
                for p, t in zip(perfect, targets)]
        row = {"guidance": scale,
               "perfect_model_tv": dict(zip(web.occupations, (round(total_variation(p, t), 3)
                                                              for p, t in zip(perfect, targets)))),
               "perfect_model_passes_each": dict(zip(web.occupations, (round(c, 3) for c in each))),
               # the occupations are drawn independently, so passing all is the product
               "perfect_model_passes_all": math.prod(each),
               "base_model": measured.get(scale)}
        if row["base_model"]:
            row["base_model"]["occupations_within_bar"] = sum(
                tv <= args.bar for tv in row["base_model"]["tv"].values())
        rows.append(row)
        ours = row["base_model"]
        ours_text = (f"base model (n={ours['n']}): {ours['occupations_within_bar']} of "
                     f"{len(targets)} within, TVs {list(ours['tv'].values())}" if ours else
                     "base model: not measured at this scale")
        print(f"w={scale:<5} perfect model passes all {len(targets)}: "
              f"{row['perfect_model_passes_all']:.3f}, expected within: {sum(each):.1f}  |  "
              f"{ours_text}")
    args.out.write_text(json.dumps({"date": date.today().isoformat(), "n": args.n, "bar": args.bar,
                                    "trials": args.trials, "occupations": list(web.occupations),
                                    "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
