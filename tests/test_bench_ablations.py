"""benchmarks/ablations.py: every variant of every study is one valid config change with its
own folder, and the table shows what each study measured."""

from __future__ import annotations

import argparse
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import ablations  # noqa: E402

from enfold.config import load_config, to_dict  # noqa: E402


def test_every_variant_changes_its_reference_and_builds():
    for study in ablations.STUDIES.values():
        base = [f"train.max_steps={study.steps}", *study.eval_overrides(study.steps),
                *study.reference]
        reference = to_dict(load_config(study.pretrain, base))
        for name, (_, overrides) in study.variants.items():
            cfg = to_dict(load_config(study.pretrain, [*base, *overrides]))
            assert (cfg == reference) == (name == "reference"), name
            assert cfg["train"]["max_steps"] == study.steps
    # one evaluation at the end, however the study spells it
    assert ablations.FMNIST.eval_overrides(500) == ["eval.every=500"]
    assert ablations.DIGITS.eval_overrides(300) == ["eval.every=0"]


def test_the_fashion_mnist_table_has_a_fine_tune_column_and_the_digits_one_does_not():
    row = {"name": "reference", "what": "w", "psnr_in": 7.0, "psnr_out": 12.0, "knn": 0.5,
           "probe": [0.4, 0.6], "finetune": [0.55], "minutes": 3.0}
    args = argparse.Namespace(seeds=[0, 1], out=ROOT / "runs" / "x", data="fmnist")
    fm = ablations.table(ablations.FMNIST, {"reference": row}, 500, 0, 60.0, args)
    assert "| fine-tune top-1 |" in fm
    assert "| reference | w | 7.00 -> 12.00 | 0.500 | 0.500 ± 0.141 | 0.550 | 3.0 |" in fm
    digits = ablations.table(ablations.DIGITS, {"reference": {**row, "finetune": []}}, 300, 0,
                             60.0, argparse.Namespace(seeds=[0, 1], out=ROOT, data="digits"))
    assert "fine-tune" not in digits and "| 0.500 ± 0.141 | 3.0 |" in digits
