"""Tests of the report writer: files written, target check, no photos in plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embeddings.ml.evaluation.bootstrap import bootstrap_ci
from embeddings.ml.evaluation.evaluate import EvalConfig, EvaluationResult
from embeddings.ml.evaluation.report import (
    ModelRun,
    ReportMeta,
    against_cooccurrence,
    compare,
    target_checks,
    write_report,
)


def fake_result(model: str, hit_rate: float, n: int = 200, seed: int = 0) -> EvaluationResult:
    rng = np.random.default_rng(seed)
    per_query = {
        metric: {cell: (rng.random(n) < hit_rate).astype(float) for cell in ("cold", "warm")}
        for metric in (
            "text_to_image/recall@10",
            "lookbook_completion/recall@10",
            "shop_the_look/recall@10",
        )
    }
    metrics = {
        metric: {cell: bootstrap_ci(v, resamples=200) for cell, v in cells.items()}
        for metric, cells in per_query.items()
    }
    return EvaluationResult(model, "toy", "fp", EvalConfig(), metrics, per_query, n_items=n)


def meta() -> ReportMeta:
    return ReportMeta(
        title="Toy report",
        dataset="toy",
        command="python -m embeddings.ml.evaluation experiment --dataset toy",
        seed=0,
        budget="none",
        hardware="test",
        split={"fingerprint": "fp", "cold_items": 10},
    )


def test_target_is_met_only_with_a_large_gain_and_disjoint_cis() -> None:
    weak, strong = fake_result("it", 0.2, seed=1), fake_result("full", 0.6, seed=2)
    checks = target_checks(weak, strong, compare(weak, strong))
    assert [c.metric for c in checks] == [
        "lookbook_completion/recall@10",
        "shop_the_look/recall@10",
    ]
    assert all(c.met and c.cis_disjoint for c in checks)
    same = fake_result("full", 0.2, seed=1)
    assert not any(c.met for c in target_checks(weak, same, compare(weak, same)))


def test_write_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    runs = [
        ModelRun("base", "default", fake_result("base", 0.1)),
        ModelRun("image-text", "checkpoint:a", fake_result("it", 0.2, seed=1)),
        ModelRun("full", "checkpoint:b", fake_result("full", 0.25, seed=2), {"epochs": 2}),
    ]
    (tmp_path / "discussion.md").write_text("## Discussion\n\nHand-written.\n")
    readme = write_report(tmp_path, runs, meta())
    text = readme.read_text()
    assert "python -m embeddings.ml.evaluation experiment" in text
    assert "Hand-written." in text
    assert "lookbook_completion/recall@10" in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert [m["label"] for m in data["models"]] == ["base", "image-text", "full"]
    cold = data["models"][2]["metrics"]["lookbook_completion/recall@10"]["cold"]
    assert cold["ci_low"] <= cold["value"] <= cold["ci_high"]
    assert data["comparison"]["target"]["checks"]
    for png in ("retrieval.png", "lookbook.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("label", ["image-text", "full"])
def test_report_without_a_comparison_pair_skips_the_target(tmp_path: Path, label: str) -> None:
    write_report(tmp_path, [ModelRun(label, "default", fake_result(label, 0.3))], meta())
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["comparison"]["target"]["checks"] == []


def ctl_result(model: str, warm: list[float], cold: list[float]) -> EvaluationResult:
    per_query = {
        "complete_the_look/recall@10": {"warm": np.asarray(warm), "cold": np.asarray(cold)}
    }
    metrics = {
        name: {cell: bootstrap_ci(v, resamples=200) for cell, v in cells.items()}
        for name, cells in per_query.items()
    }
    return EvaluationResult(model, "toy", "fp", EvalConfig(), metrics, per_query)


def test_complete_the_look_is_compared_with_co_occurrence_query_by_query(tmp_path: Path) -> None:
    # Co-occurrence finds the warm half; "full" finds the same plus 20 more, "base" 20 fewer
    # and nothing cold either way.
    co = [1.0] * 100 + [0.0] * 100
    runs = [
        ModelRun("base", "default", ctl_result("base", [1.0] * 80 + [0.0] * 120, [0.0] * 50)),
        ModelRun("full", "b", ctl_result("full", [1.0] * 120 + [0.0] * 80, [0.0] * 50)),
        ModelRun("co-occurrence", "counts", ctl_result("co", co, [0.0] * 50)),
    ]

    versus = against_cooccurrence(runs)

    assert versus["full"]["warm"].value == pytest.approx(0.1)
    assert versus["full"]["warm"].ci_low > 0  # beats: paired, every resample gains
    assert versus["base"]["warm"].value == pytest.approx(-0.1)
    assert versus["base"]["warm"].ci_high < 0
    assert versus["full"]["cold"].value == 0.0
    write_report(tmp_path, runs, meta())
    text = (tmp_path / "README.md").read_text()
    assert "| full | +0.000 [+0.000, +0.000] | no | +0.100 [" in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["comparison"]["complete_the_look_minus_cooccurrence"]["full"]["warm"]["value"] == (
        pytest.approx(0.1)
    )
