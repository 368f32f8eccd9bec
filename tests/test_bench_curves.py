"""benchmarks/learning_curves.py: its read-offs interpolate between measured budgets and never
extrapolate (no transformers needed: the MAE is imported only to train it)."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import learning_curves  # noqa: E402


def test_learning_curve_read_offs_interpolate_in_log_steps_and_never_extrapolate():
    points = [(250, 0.5), (1000, 0.7)]
    assert learning_curves.interpolate(points, 500) == pytest.approx(0.6)  # halfway in log2
    assert learning_curves.interpolate(points, 1000) == pytest.approx(0.7)
    assert learning_curves.interpolate(points, 125) is None
    assert learning_curves.interpolate(points, 2000) is None
    row = lambda steps, top1: {"steps": steps, "pretrained": [top1], "linear": [top1],  # noqa: E731
                               "knn": [top1]}
    series = {"enfold": [row(500, 0.65)], "MAE": [row(250, 0.5), row(1000, 0.7)]}
    rows = learning_curves.read_offs(series, "enfold", {"enfold": 2.0, "mae": 1.0}, 1.0)
    # equal epochs: 500 MAE steps (0.6); CPU wall-clock: 1000 (0.7); GPU ratio 1: 500 (0.6)
    assert "0.650 vs 0.600 (+5.0)" in rows[0]
    assert "0.650 vs 0.700 (-5.0)" in rows[1]
    assert "0.650 vs 0.600 (+5.0)" in rows[2]
