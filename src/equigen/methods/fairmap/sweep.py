"""The fairness / fidelity trade-off: one map per lambda, each audited like the base model.

For every lambda: train a map (reused if its folder is complete), audit a fairness prompt set
(neutral prompts, ideally held-out concepts) and a fidelity prompt set (prompts naming other
attributes, whose accuracy the map must not cost). The base model is audited the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from equigen.audit.run import AuditConfig, run_audit
from equigen.config import StrictModel
from equigen.methods.fairmap.mapping import CONFIG, WEIGHTS
from equigen.methods.fairmap.prompts import FairMapConfig
from equigen.methods.fairmap.train import train_fairmap
from equigen.models.defaults import DEFAULT_GUIDANCE_SCALE
from equigen.utils.console import info
from equigen.utils.io import write_json_atomic


class SweepPlan(StrictModel):
    weights: list[float] = Field(min_length=1)
    fairness_prompts: Path = Path("configs/prompts/mini-world-heldout-occupations.yaml")
    fidelity_prompts: Path = Path("configs/prompts/mini-world-fidelity.yaml")
    n: int = Field(40, ge=2)  # images per fairness prompt
    n_fidelity: int = Field(4, ge=1)  # images per fidelity prompt (there are many prompts)
    annotator: str = "oracle"
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    steps: int = Field(25, ge=1)  # sampling steps
    out: Path = Path("runs/fairmap-sweep")


def _audits(cfg: FairMapConfig, plan: SweepPlan, fairmap: Path | None, folder: Path,
            allow_download: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    common = dict(model=cfg.model, fairmap=fairmap, annotator=plan.annotator,
                  guidance_scale=plan.guidance_scale, steps=plan.steps, seed=cfg.seed, device=cfg.device)
    fairness = run_audit(AuditConfig(prompts=plan.fairness_prompts, n=plan.n, out=folder / "fairness",
                                     **common), allow_download)
    fidelity = run_audit(AuditConfig(prompts=plan.fidelity_prompts, n=plan.n_fidelity,
                                     out=folder / "fidelity",
                                     **common), allow_download)
    return fairness, fidelity


def _row(label: str, attribute: str, fairness: dict[str, Any], fidelity: dict[str, Any],
         fair_weight: float | None) -> dict[str, Any]:
    accuracy = fidelity["summary"]["alignment"]
    mean = [sum(v[i] for v in accuracy.values()) / len(accuracy) for i in range(3)]
    return {"label": label, "lambda": fair_weight,
            "fd": fairness["summary"]["fairness"][attribute]["fd"],
            "fidelity": mean, "accuracy": accuracy}


def run_sweep(cfg: FairMapConfig, plan: SweepPlan, allow_download: bool = False) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; write ``sweep.json`` and ``report.html``; return the table."""
    attribute = next(iter(cfg.attributes))
    info(f"auditing the base model ({plan.out / 'base'})")
    table = [_row("base", attribute, *_audits(cfg, plan, None, plan.out / "base", allow_download),
                  None)]
    for weight in plan.weights:
        folder = plan.out / f"lambda-{weight:g}"
        map_dir = folder / "map"
        if not ((map_dir / WEIGHTS).is_file() and (map_dir / CONFIG).is_file()):
            info(f"training the map for lambda = {weight:g}")
            train_fairmap(cfg.model_copy(update={"fair_weight": weight, "out": map_dir}),
                          allow_download=allow_download)
        table.append(_row(f"λ={weight:g}", attribute,
                          *_audits(cfg, plan, map_dir, folder, allow_download), weight))
    write_json_atomic(plan.out / "sweep.json", {"attribute": attribute, "rows": table,
                                                "plan": plan.model_dump(mode="json")})
    write_sweep_report(plan, table, attribute)
    return table


def write_sweep_report(plan: SweepPlan, table: list[dict[str, Any]], attribute: str) -> Path:
    """The before/after report of every lambda's fairness audit, led by the trade-off chart."""
    from equigen.audit.report import tradeoff_chart, write_report

    chart = tradeoff_chart([{"label": r["label"], "x": r["fidelity"], "y": r["fd"]} for r in table],
                           "fidelity: named-attribute accuracy", f"{attribute} FD (lower is fairer)",
                           "Fairness / fidelity trade-off over lambda")
    runs = [plan.out / "base" / "fairness"] + [plan.out / f"lambda-{w:g}" / "fairness"
                                               for w in plan.weights]
    return write_report(runs, plan.out / "report.html", title=f"Fair Mapping sweep · {attribute}",
                        extra_html=chart)
