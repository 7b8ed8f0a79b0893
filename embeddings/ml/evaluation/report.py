"""Report writer: JSON + Markdown + PNG bar charts comparing models on one dataset split.

``write_report(out_dir, runs, meta)`` writes, under ``out_dir``:
- ``results.json``: every metric of every model per cell (value, CI, n), the paired relative
  change of the full objective over image-text only, the target check, and the metadata
  (command, seed, budget, hardware, training summaries);
- ``README.md``: the same as tables, with the reproduce command and, when ``discussion.md``
  exists beside it, that hand-written discussion (kept across re-runs);
- ``retrieval.png``, ``lookbook.png``: bars per model with bootstrap 95% CI error bars. Plots
  show numbers only, never dataset photos.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.ml.evaluation.bootstrap import (
    MetricValue,
    RelativeChange,
    bootstrap_ci,
    paired_relative_ci,
)
from embeddings.ml.evaluation.evaluate import METRICS, EvaluationResult
from embeddings.ml.evaluation.splits import CELLS

RETRIEVAL_PLOT = (
    "text_to_image/recall@10",
    "text_to_image/mrr",
    "image_to_text/recall@10",
    "image_to_text/mrr",
    "text_to_image/category_precision@10",
    "image_to_image/category_precision@10",
    "image_to_image/category_precision@10_other_lookbooks",
)
LOOKBOOK_PLOT = (
    "lookbook_completion/recall@10",
    "lookbook_completion/ndcg@10",
    "complete_the_look/recall@10",
    "fill_in_the_blank/accuracy",
    "shop_the_look/recall@10",
)
# The target: full objective vs image-text only, cold items.
TARGET_METRICS = ("lookbook_completion/recall@10", "shop_the_look/recall@10")
TARGET_RELATIVE_GAIN = 0.15
# The other target: a model's complete the look against counting co-occurrences.
COOCCURRENCE_LABEL = "co-occurrence"
COMPLETE_THE_LOOK = "complete_the_look/recall@10"


@dataclass
class ModelRun:
    """One evaluated model: a short label ('base', 'image-text', 'full'), how it was made."""

    label: str
    spec: str  # what load_encoder was given
    result: EvaluationResult
    training: dict[str, Any] | None = None  # config and timings of the fine-tuning run


@dataclass
class ReportMeta:
    """What a reader needs to trust and reproduce the figures."""

    title: str
    dataset: str
    command: str
    seed: int
    budget: str
    hardware: str
    split: dict[str, Any]  # summary: sizes, fractions, fingerprint, path, sha256
    notes: list[str] = field(default_factory=list)
    baseline_label: str = "image-text"  # compared against ...
    candidate_label: str = "full"  # ... this one, for the target
    check_target: bool = True  # False: report the relative change but no issue target


@dataclass(frozen=True)
class TargetCheck:
    """Whether the candidate beats the baseline by the target margin on one cold metric."""

    metric: str
    cell: str
    baseline: float
    candidate: float
    relative: RelativeChange
    cis_disjoint: bool
    met: bool


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_none(v) for v in x]
    return x


def compare(
    baseline: EvaluationResult, candidate: EvaluationResult, seed: int = 0
) -> dict[str, dict[str, RelativeChange]]:
    """Paired relative change of ``candidate`` over ``baseline`` for every shared metric/cell."""
    out: dict[str, dict[str, RelativeChange]] = {}
    for metric, cells in candidate.per_query.items():
        for cell, values in cells.items():
            base = baseline.per_query.get(metric, {}).get(cell)
            if base is None or len(base) != len(values):
                continue
            out.setdefault(metric, {})[cell] = paired_relative_ci(base, values, seed=seed)
    return out


def target_checks(
    baseline: EvaluationResult,
    candidate: EvaluationResult,
    changes: dict[str, dict[str, RelativeChange]],
) -> list[TargetCheck]:
    """The issue's target on each of ``TARGET_METRICS`` for cold items.

    Met when the relative gain is at least ``TARGET_RELATIVE_GAIN`` and the two models'
    bootstrap CIs do not overlap. Metrics the dataset cannot measure are skipped.
    """
    checks = []
    for metric in TARGET_METRICS:
        b = baseline.metrics.get(metric, {}).get("cold")
        c = candidate.metrics.get(metric, {}).get("cold")
        rel = changes.get(metric, {}).get("cold")
        if b is None or c is None or rel is None:
            continue
        disjoint = c.ci_low > b.ci_high or b.ci_low > c.ci_high
        met = (
            not math.isnan(rel.value)
            and rel.value >= TARGET_RELATIVE_GAIN
            and disjoint
            and c.value > b.value
        )
        checks.append(TargetCheck(metric, "cold", b.value, c.value, rel, disjoint, met))
    return checks


def against_cooccurrence(
    runs: Sequence[ModelRun], seed: int = 0
) -> dict[str, dict[str, MetricValue]]:
    """Each model's complete the look minus co-occurrence's, per cell: the mean of the
    per-query differences with a paired bootstrap 95% CI (same queries for both). Empty
    without a co-occurrence run."""
    co = next((r for r in runs if r.label == COOCCURRENCE_LABEL), None)
    if co is None:
        return {}
    out: dict[str, dict[str, MetricValue]] = {}
    for r in runs:
        if r is co:
            continue
        for cell, values in r.result.per_query.get(COMPLETE_THE_LOOK, {}).items():
            base = co.result.per_query.get(COMPLETE_THE_LOOK, {}).get(cell)
            if base is not None and len(base) == len(values):
                out.setdefault(r.label, {})[cell] = bootstrap_ci(values - base, seed=seed)
    return out


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:+.1f}%"


def _plot(path: Path, runs: Sequence[ModelRun], metrics: Sequence[str], title: str) -> bool:
    """Grouped bars per cell; returns False (and writes nothing) when no metric is present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [x for x in metrics if any(x in r.result.metrics for r in runs)]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(CELLS), figsize=(6.5 * len(CELLS), 4.2), sharey=True)
    width = 0.8 / len(runs)
    x = np.arange(len(present))
    for ax, cell in zip(np.atleast_1d(axes), CELLS, strict=True):
        for j, run in enumerate(runs):
            vals, lo, hi = [], [], []
            for metric in present:
                mv = run.result.metrics.get(metric, {}).get(cell)
                v = mv.value if mv is not None and mv.n else float("nan")
                vals.append(v)
                lo.append(0.0 if math.isnan(v) else v - mv.ci_low)  # type: ignore[union-attr]
                hi.append(0.0 if math.isnan(v) else mv.ci_high - v)  # type: ignore[union-attr]
            ax.bar(
                x + (j - (len(runs) - 1) / 2) * width,
                np.nan_to_num(vals),
                width,
                yerr=[lo, hi],
                capsize=3,
                label=run.label,
            )
        labels = [textwrap.fill(p.replace("/", " ").replace("_", " "), 16) for p in present]
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(f"{cell} items")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(f"{title} (bars: mean; whiskers: bootstrap 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _table(runs: Sequence[ModelRun], metrics: Sequence[str], cell: str) -> list[str]:
    lines = [
        "| metric | " + " | ".join(r.label for r in runs) + " | chance | n |",
        "|---|" + "---|" * len(runs) + "---|---|",
    ]
    for metric in metrics:
        cells = [r.result.metrics.get(metric, {}).get(cell) for r in runs]
        if all(c is None for c in cells):
            continue
        row = [
            "-" if c is None else f"{_fmt(c.value)} [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]"
            for c in cells
        ]
        chance = runs[0].result.chance.get(metric, {}).get(cell, float("nan"))
        n = next((c.n for c in cells if c is not None), 0)
        lines.append(f"| {metric} | " + " | ".join(row) + f" | {_fmt(chance)} | {n} |")
    return lines


def write_report(out_dir: str | Path, runs: Sequence[ModelRun], meta: ReportMeta) -> Path:
    """Write results.json, README.md and the PNG plots; returns the README path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_label = {r.label: r for r in runs}
    base = by_label.get(meta.baseline_label)
    cand = by_label.get(meta.candidate_label)
    changes = compare(base.result, cand.result, meta.seed) if base and cand else {}
    checks = (
        target_checks(base.result, cand.result, changes)
        if base and cand and meta.check_target
        else []
    )

    versus_co = against_cooccurrence(runs, meta.seed)
    payload = {
        "title": meta.title,
        "dataset": meta.dataset,
        "command": meta.command,
        "seed": meta.seed,
        "budget": meta.budget,
        "hardware": meta.hardware,
        "split": meta.split,
        "notes": meta.notes,
        "models": [
            {"label": r.label, "spec": r.spec, "training": r.training, **r.result.to_dict()}
            for r in runs
        ],
        "comparison": {
            "baseline": meta.baseline_label,
            "candidate": meta.candidate_label,
            "relative_change": {
                metric: {cell: rc.to_dict() for cell, rc in cells.items()}
                for metric, cells in changes.items()
            },
            "complete_the_look_minus_cooccurrence": {
                label: {cell: v.to_dict() for cell, v in cells.items()}
                for label, cells in versus_co.items()
            },
            "target": {
                "relative_gain": TARGET_RELATIVE_GAIN,
                "checks": [
                    {
                        "metric": c.metric,
                        "cell": c.cell,
                        "baseline": c.baseline,
                        "candidate": c.candidate,
                        "relative": c.relative.to_dict(),
                        "cis_disjoint": c.cis_disjoint,
                        "met": c.met,
                    }
                    for c in checks
                ],
            },
        },
    }
    (out / "results.json").write_text(
        json.dumps(_nan_to_none(payload), indent=1, sort_keys=False) + "\n"
    )

    plots = []
    if _plot(out / "retrieval.png", runs, RETRIEVAL_PLOT, f"{meta.dataset}: retrieval"):
        plots.append(("retrieval.png", "Retrieval"))
    if _plot(out / "lookbook.png", runs, LOOKBOOK_PLOT, f"{meta.dataset}: lookbook tasks"):
        plots.append(("lookbook.png", "Lookbook tasks"))

    md = [f"# {meta.title}", ""]
    md += [
        "Generated by `embeddings.ml.evaluation`; every figure below comes from the run",
        "described here. Values are means over queries with bootstrap 95% confidence",
        "intervals (resampling queries, 1,000 resamples) in brackets; *chance* is the",
        "expected value under a random ranking (n/a where not simple to state).",
        "",
        "## Reproduce",
        "",
        "```",
        meta.command,
        "```",
        "",
        f"- Seed: {meta.seed}",
        f"- Budget: {meta.budget}",
        f"- Hardware: {meta.hardware}",
        "- Split: " + ", ".join(f"{k} = {v}" for k, v in meta.split.items() if k not in ("path",)),
        "",
        "## Models",
        "",
    ]
    for r in runs:
        t = r.result
        line = f"- **{r.label}**: `{r.spec}` — {t.n_items} items, {t.n_failed} photos failed"
        if r.training:
            keys = (
                "objectives",
                "epochs",
                "max_steps",
                "steps",
                "batch_pairs",
                "lr",
                "lr_pretrained",
                "n_train_items",
                "n_train_lookbooks",
                "seconds",
                "final_loss",
            )
            summary = ", ".join(
                f"{k} {r.training[k]}" for k in keys if r.training.get(k) is not None
            )
            line += f"; trained: {summary}"
        md.append(line)
    md.append("")
    if checks:
        md += [
            f"## Target: {meta.candidate_label} vs {meta.baseline_label}, cold items",
            "",
            f"The issue asks for ≥{TARGET_RELATIVE_GAIN:.0%} relative gain with non-overlapping",
            "CIs. Relative change with a paired bootstrap 95% CI (same queries, both models):",
            "",
            "| metric | " + f"{meta.baseline_label} | {meta.candidate_label} | relative change "
            "| CIs disjoint | met |",
            "|---|---|---|---|---|---|",
        ]
        for c in checks:
            md.append(
                f"| {c.metric} | {_fmt(c.baseline)} | {_fmt(c.candidate)} | "
                f"{_pct(c.relative.value)} [{_pct(c.relative.ci_low)}, "
                f"{_pct(c.relative.ci_high)}] | {'yes' if c.cis_disjoint else 'no'} | "
                f"{'**yes**' if c.met else '**no**'} |"
            )
        md.append("")
    if versus_co:
        md += [
            "## Complete the look vs co-occurrence",
            "",
            f"`{COMPLETE_THE_LOOK}` of each model (the search app's order) minus co-occurrence",
            "counting's on the same queries: mean difference with a paired bootstrap 95% CI;",
            "*beats* when the whole interval is above 0.",
            "",
            "| model | " + " | ".join(f"{c}: difference | {c}: beats" for c in CELLS) + " |",
            "|---|" + "---|---|" * len(CELLS),
        ]
        for label, cells in versus_co.items():
            row = []
            for cell in CELLS:
                d = cells.get(cell)
                if d is None:
                    row += ["-", "-"]
                    continue
                row += [
                    f"{d.value:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]",
                    "**yes**" if d.ci_low > 0 else "no",
                ]
            md.append(f"| {label} | " + " | ".join(row) + " |")
        md.append("")
    for cell in CELLS:
        md += [f"## Results: {cell} items", ""]
        md += _table(runs, METRICS, cell)
        md.append("")
    if changes:
        md += [
            f"## Relative change, {meta.candidate_label} over {meta.baseline_label} "
            "(paired bootstrap 95% CI)",
            "",
            "| metric | " + " | ".join(CELLS) + " |",
            "|---|" + "---|" * len(CELLS),
        ]
        for metric in METRICS:
            if metric not in changes:
                continue
            row = []
            for cell in CELLS:
                rc = changes[metric].get(cell)
                row.append(
                    "-"
                    if rc is None
                    else f"{_pct(rc.value)} [{_pct(rc.ci_low)}, {_pct(rc.ci_high)}]"
                )
            md.append(f"| {metric} | " + " | ".join(row) + " |")
        md.append("")
    for name, caption in plots:
        md += [f"![{caption}]({name})", ""]
    if meta.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in meta.notes] + [""]
    discussion = out / "discussion.md"
    if discussion.exists():
        md += [discussion.read_text().rstrip(), ""]
    readme = out / "README.md"
    readme.write_text("\n".join(md))
    return readme
