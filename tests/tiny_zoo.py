"""A tiny model zoo, built once per test session by the real build script
(benchmarks/build_zoo.py) from tiny digits runs: a mask restorer, a classifier (tried in fp16)
and an encoder with timm weights, so the zoo checks and the registry run on real files even
while no model ships."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from conftest import DIGITS_TINY, ROOT, TINY, train
from tiny_runs import FINETUNE_TINY

sys.path.insert(0, str(ROOT / "benchmarks"))
import build_zoo  # noqa: E402

_SHARED: dict[str, Any] = {}
TINY_RUN = [*TINY, "train.max_steps=10", "eval.every=10", "model.steps=1"]


def tiny_specs(runs: Path) -> list[build_zoo.ModelSpec]:
    """The tiny zoo's models: runs/pre (pretrain) and runs/ft (finetune) under ``runs``."""
    pre, ft = str(runs / "pre"), str(runs / "ft")
    cfg_pre, cfg_ft = str(DIGITS_TINY), str(FINETUNE_TINY)
    return [
        build_zoo.ModelSpec("tiny-mask", "mask", "restorer", pre, cfg_pre,
                            (f"enfold pretrain --config {cfg_pre} --out {pre}",),
                            "restores masked digit patches", try_fp16=False),
        build_zoo.ModelSpec("tiny-classifier", "classify", "classifier", ft, cfg_ft,
                            (f"enfold finetune --config {cfg_ft} --out {ft}",),
                            "digit classes", metric_args={"count": 200}),
        build_zoo.ModelSpec("tiny-encoder", "features", "encoder", pre, cfg_pre,
                            (f"enfold pretrain --config {cfg_pre} --out {pre}",),
                            "digit features", timm=True, try_fp16=False,
                            metric_args={"count": 200, "bank_per_class": 20}),
    ]


def tiny_zoo(tmp_path_factory) -> dict[str, Any]:
    """``{"zoo": folder, "runs": folder, "specs": [...], "readme": README copy, "seconds":
    build time}``, built on first use and shared by later tests."""
    if not _SHARED:
        root = tmp_path_factory.mktemp("tiny-zoo")
        runs = root / "runs"
        pre = train("pretrain", DIGITS_TINY, runs / "pre", TINY_RUN)
        train("finetune", FINETUNE_TINY, runs / "ft", TINY_RUN, pretrained=pre)
        readme = root / "README.md"
        shutil.copyfile(ROOT / "README.md", readme)
        specs = tiny_specs(runs)
        t0 = time.time()
        doc, skipped = build_zoo.build(specs, root / "zoo", readme=readme, log=lambda _: None)
        assert not skipped, skipped
        _SHARED.update(zoo=root / "zoo", runs=runs, specs=specs, readme=readme, doc=doc,
                       seconds=time.time() - t0)
    return _SHARED


def copy_zoo(src: Path, dst: Path) -> Path:
    """A copy of a zoo to tamper with."""
    shutil.copytree(src, dst)
    return dst
