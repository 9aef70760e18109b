"""``equigen annotators``: check how well an annotator reads attributes before trusting an audit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from equigen.cli.common import example, state
from equigen.utils.console import output

app = typer.Typer(help="Annotators (oracle, zero-shot CLIP, your own classifier): check their "
                  "accuracy on labelled images, since a biased annotator fakes bias.",
                  no_args_is_help=True)

CALIBRATE_EPILOG = example(
    "equigen world export probe --out data/probe --n 500 --seed 7",
    "equigen annotators calibrate --annotator oracle data/probe",
    "equigen annotators calibrate --annotator clip:configs/annotators/clip-fairface.yaml "
    "data/fairface-val --attribute gender --json runs/clip-calibration.json",
)


@app.callback()
def _group() -> None:
    """Annotators: check their accuracy on labelled images."""


@app.command(epilog=CALIBRATE_EPILOG)
def calibrate(
    dataset: Annotated[Path, typer.Argument(help="Labelled dataset folder (metadata.jsonl with "
                                            "attribute columns).", show_default=False)],
    annotator: Annotated[str, typer.Option(help="oracle, oracle:FOLDER, clip:CONFIG.yaml or "
                                           "classifier:FOLDER.")] = "oracle",
    attribute: Annotated[Optional[list[str]], typer.Option(
        help="Attribute to check (repeatable; default: every one the annotator reads that the "
        "dataset labels).", show_default=False)] = None,
    abstain_below: Annotated[Optional[float], typer.Option(
        help="Abstain under this max probability, for every attribute (default: the "
        "annotator's own thresholds).",
        show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Check only the first N images.",
                                                 show_default=False)] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images read per batch.")] = 64,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures to "
                                                     "this JSON file.", show_default=False)] = None,
) -> None:
    """Accuracy (95% interval), per-group recall, recall gap, abstention and confusion of an
    annotator on labelled images."""
    from rich.markup import escape
    from rich.table import Table

    from equigen.audit.annotate import load_annotator
    from equigen.audit.calibration import calibrate as run_calibration
    from equigen.utils.io import write_json_atomic

    reader = load_annotator(annotator, allow_download=state.allow_download)
    report = run_calibration(reader, dataset, attributes=attribute, abstain_below=abstain_below,
                             n_boot=n_boot, seed=seed, batch_size=batch_size, limit=limit)
    summary = Table(title=f"{annotator} on {dataset} ({report['n_images']} images)")
    for column in ("attribute", "n", "accuracy [95%]", "abstained", "recall by group",
                   "recall gap [95%]"):
        summary.add_column(column, justify="right" if column in ("n", "abstained") else "left")
    summary.caption = ("accuracy: over answered images; recall: per true group, abstentions "
                       "count as misses; gap: max - min recall (red when its interval is above 10%)")
    for name, fig in report["attributes"].items():
        acc, gap = fig["accuracy"], fig["recall_gap"]
        acc_text = "-" if acc[0] is None else f"{acc[0]:.1%} [{acc[1]:.1%}, {acc[2]:.1%}]"
        recall = ", ".join(f"{g} {'-' if r is None else f'{r:.0%}'}" for g, r in fig["recall"].items())
        low, high = fig["recall_gap_groups"]
        style = "red" if gap[1] is not None and gap[1] > 0.1 else ""
        gap_text = f"[{style}]{gap[0]:.1%}[/{style}]" if style else f"{gap[0]:.1%}"
        abstained = f"{fig['abstention_rate']:.1%}"
        if fig["abstain_below"] is not None:
            abstained += f" (< {fig['abstain_below']:g})"
        summary.add_row(name, str(fig["n"]), acc_text, abstained, recall,
                        f"{gap_text} [{gap[1]:.1%}, {gap[2]:.1%}]"
                        + (f" ({escape(low)} vs {escape(high)})" if gap[0] > 0 else ""))
    output.print(summary)
    for name, fig in report["attributes"].items():
        confusion = Table(title=f"{name}: true (rows) vs read (columns)")
        confusion.add_column("true \\ read")
        columns = fig["confusion"]["columns"]
        for column in columns:
            confusion.add_column(column, justify="right")
        for row_name, counts in zip(fig["confusion"]["rows"], fig["confusion"]["counts"]):
            confusion.add_row(row_name, *[str(c) for c in counts])
        output.print(confusion)
        if fig["unmatched"]:
            output.print(f"[yellow]{name}: labels that are none of the annotator's groups were "
                         f"left out: {escape(str(fig['unmatched']))}[/yellow]")
    if json_out is not None:
        write_json_atomic(json_out, report)
        output.print(f"written to {json_out}")
