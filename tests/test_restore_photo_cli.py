"""`enfold restore` on an ordinary 12-megapixel camera photo: no flags needed, full size out."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import DIGITS_TINY, TINY, train
from PIL import Image

# a model with 64-pixel tiles keeps the 12 MP restoration to a few thousand tiles
BIG_TILES = [*TINY, "model.img_size=64", "model.patch_size=16", "train.max_steps=1",
             "eval.every=0", "model.steps=1"]


@pytest.mark.slow  # about 20 s of CPU, decoding, 11,000 tiles and PNG writing
def test_cli_restores_a_12_megapixel_photo_without_flags(tmp_path, monkeypatch, capsys):
    from enfold.cli.app import main

    ckpt = train("pretrain", DIGITS_TINY, tmp_path / "run", BIG_TILES)
    h, w = 3000, 4000  # 12 MP, 4:3
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(xx / 400), 128 + 100 * np.cos(yy / 300),
                    np.full((h, w), 90.0)], axis=-1).astype(np.uint8)
    photo = tmp_path / "camera.jpg"
    Image.fromarray(rgb).save(photo, quality=90)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["enfold", "restore", str(photo), "--model", str(ckpt),
                                      "--task", "noise", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    with Image.open(out / "camera.png") as restored:
        assert restored.size == (w, h)
    report = json.loads((out / "restore.json").read_text())
    assert report["errors"] == {} and report["results"][0]["task"] == "noise"
