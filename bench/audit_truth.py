"""Does the audit read bias correctly both ways? Ground truth from the mini-world.

    python bench/audit_truth.py [--audit RUN]

1. Renders of the `balanced` distribution and of the `web` distribution, grouped by occupation
   as the neutral prompts group generations, read by the same annotator and metrics as the
   audit: tone FD must be ~0 (up to its sampling floor) on `balanced` and equal the declared FD
   on `web`.
2. With --audit RUN (an `equigen audit` of the base model over the neutral occupation prompts):
   whether each occupation's tone FD interval contains the FD of the `web` distribution that the
   model was trained on, and the FD a perfect model of `web` has under the audit's guidance scale
   (guidance tilts every skew: ``equigen.audit.metrics.guidance_tilt``), so that a miss can be
   told apart: the model's own error, or guidance doing what it always does. The same for the
   figure the audit reports for the whole prompt set (its summary: FD averaged over prompts).
   At w = 1 (no guidance) a perfect model samples `web` itself, so there the two coincide.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equigen.audit.metrics import METRICS, guidance_tilt, metric_interval, sampling_floor, uniform
from equigen.world.distributions import declared, sample_rows
from equigen.world.oracle import OracleAnnotator
from equigen.world.render import render
from equigen.world.scene import Scene, load_world


def renders_by_occupation(name: str, n_per: int, seed: int) -> dict[str, list]:
    world = load_world()
    rows = sample_rows(name, n_per * len(world.occupations) * 3, seed=seed)
    out: dict[str, list] = {o: [] for o in world.occupations}
    for r in rows:
        if len(out[r["occupation"]]) < n_per:
            out[r["occupation"]].append(render(Scene(r["tone"], r["region"], r["occupation"],
                                                     r["setting"], r["style"]), r["seed"]))
    return out


def check(name: str, interval: list[float], truth: float, perfect: float, guidance: float) -> dict:
    """Does the audit's FD interval contain the web FD (and a perfect model's FD at ``guidance``)?"""
    inside = interval[1] <= truth <= interval[2]
    print(f"audit    {name:8s} FD {interval[0]:.3f} [{interval[1]:.3f}, {interval[2]:.3f}]"
          f"  web FD {truth:.3f}  interval contains it: {inside}"
          f"  (a perfect model at w={guidance:g}: {perfect:.3f})")
    return {"fd": interval, "web_fd": truth, "contains": inside, "perfect_model_fd": perfect,
            "contains_perfect": interval[1] <= perfect <= interval[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="renders per occupation")
    parser.add_argument("--audit", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/audit_truth.json"))
    args = parser.parse_args()
    oracle = OracleAnnotator.load()
    web = declared("web")
    k = 4
    fd = METRICS["fd"]
    result: dict = {"n_per_occupation": args.n, "renders": {}}
    for name in ("balanced", "web"):
        per = {}
        for occupation, images in renders_by_occupation(name, args.n, seed=99).items():
            labels = oracle.predict_proba(images)["tone"].argmax(-1).numpy()
            truth = (uniform(k) if name == "balanced"
                     else web.tone_given_occupation[web.occupations.index(occupation)])
            per[occupation] = {"fd": metric_interval(labels, k, fd), "declared_fd": fd(truth, uniform(k)),
                               "floor": sampling_floor(fd, uniform(k), len(labels))}
            v = per[occupation]
            print(f"{name:8s} {occupation:8s} FD {v['fd'][0]:.3f} [{v['fd'][1]:.3f}, {v['fd'][2]:.3f}]"
                  f"  declared {v['declared_fd']:.3f}  (floor at n={len(labels)}: {v['floor']:.3f})")
        result["renders"][name] = per
    if args.audit:
        results = json.loads((args.audit / "results.json").read_text())
        guidance = float(results["config"]["guidance_scale"])
        marginal = web.tone  # the unconditional branch's tones
        result["audit"] = {}
        result["audit_guidance_scale"] = guidance
        for prompt in results["prompts"]:
            occupation = prompt["slots"].get("occupation")
            if occupation is None or "tone" not in prompt["attributes"]:
                continue
            skew = web.tone_given_occupation[web.occupations.index(occupation)]
            result["audit"][occupation] = check(
                occupation, prompt["attributes"]["tone"]["fd"], fd(skew, uniform(k)),
                fd(guidance_tilt(skew, marginal, guidance), uniform(k)), guidance)
        # what the audit reports as the prompt set's tone FD: the mean over the neutral prompts
        per = result["audit"].values()
        result["audit_mean"] = check(
            "mean", results["summary"]["fairness"]["tone"]["fd"],
            sum(v["web_fd"] for v in per) / len(per),
            sum(v["perfect_model_fd"] for v in per) / len(per), guidance)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
