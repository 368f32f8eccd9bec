"""Each task's real input path through the Python API, `enfold restore` and ``/v1/restore``:
a low-resolution image enlarged (sr), holes of any shape given as a mask file (mask), a gray
photo coloured (gray), and the demonstration path (``simulate``)."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch
from conftest import DIGITS_TINY, TINY, train
from PIL import Image

from enfold.errors import EnfoldError
from enfold.runtime.images import decode_image, encode_png

FEW = [*TINY, "train.max_steps=2", "eval.every=0"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny restorers for sr (x2), mask (keeping the visible pixels: the mask is a graph input)
    and gray, and the mask one exported to TorchScript."""
    from enfold.export.export import export_artifact

    root = tmp_path_factory.mktemp("tasks")
    runs = {
        "sr": train("pretrain", DIGITS_TINY, root / "sr", [*FEW, "corrupt.tasks=[sr]"]),
        "mask": train("pretrain", DIGITS_TINY, root / "mask",
                      [*FEW, "corrupt.tasks=[mask]", "model.consistency=true"]),
        "gray": train("pretrain", DIGITS_TINY, root / "gray", [*FEW, "corrupt.tasks=[gray]"]),
    }
    runs["mask-ts"] = export_artifact(str(runs["mask"]), "restorer", "torchscript",
                                      root / "art", batch="4", validate=False)["artifact"]
    return runs


def _photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    noise = 0.05 * torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    return (torch.stack([0.2 + 0.6 * yy, 0.4 + 0.4 * xx, 0.5 + 0.3 * xx * yy]) + noise).clamp(0, 1)


def _blob_mask(h: int, w: int) -> torch.Tensor:
    """An ellipse and a diagonal stroke, aligned to nothing."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    ellipse = ((yy - h * 0.4) / (h * 0.2)) ** 2 + ((xx - w * 0.3) / (w * 0.15)) ** 2 <= 1
    stroke = (yy - xx * h / w).abs() < 1.2
    return (ellipse | stroke).float()


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from enfold.cli.app import main

    monkeypatch.setattr(sys, "argv", ["enfold", "restore", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code or 0, capsys.readouterr().err


def _client(model):
    from fastapi.testclient import TestClient

    from enfold.runtime import load
    from enfold.runtime.server import create_app

    return TestClient(create_app(load(model)))


# ----------------------------------------------------------------------------- sr


def test_sr_scale_enlarges_the_low_resolution_image(models, tmp_path, monkeypatch, capsys):
    from enfold.runtime import load
    from enfold.runtime.restore import enlarge, restore_image

    session = load(models["sr"])
    small = _photo(11, 15)
    rest = restore_image(session, small, "sr", scale=2)
    assert rest.restored.shape == (3, 22, 30)
    assert torch.allclose(rest.degraded, enlarge(small, 2).clamp(0, 1))
    (tmp_path / "small.png").write_bytes(encode_png(small))
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "small.png"), "--model",
                     str(models["sr"]), "--scale", "2", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert decode_image(tmp_path / "out" / "small.png", 3).shape == (3, 22, 30)
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "small.png"), "--model",
                     str(models["sr"]), "--scale", "4", "--out", str(tmp_path / "out4"))
    assert code == 0, err
    assert decode_image(tmp_path / "out4" / "small.png", 3).shape == (3, 44, 60)
    with _client(models["sr"]) as client:
        r = client.post("/v1/restore", files={"file": ("s.png", encode_png(small))},
                        data={"task": "sr", "scale": "2"})
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).size == (30, 22)
        got = decode_image(r.content, 3)
        assert (got - decode_image(encode_png(rest.restored), 3)).abs().max() <= 1 / 255 + 1e-6
        r = client.post("/v1/restore", files={"file": ("s.png", encode_png(small))},
                        data={"task": "sr", "scale": "4"})
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).size == (60, 44)


def test_an_x2_restorer_enlarges_x4_in_two_passes(models):
    from types import SimpleNamespace

    from enfold.runtime import load
    from enfold.runtime.budget import tile_count
    from enfold.runtime.restore import enlarge, restore_image, sr_passes, sr_tile_count

    session = load(models["sr"])
    small = _photo(11, 15, seed=2)
    seen: list[tuple[int, int]] = []
    rest = restore_image(session, small, "sr", scale=4,
                         progress=lambda done, total: seen.append((done, total)))
    once = restore_image(session, small, "sr", scale=2).restored
    twice = restore_image(session, once, "sr", scale=2).restored
    assert rest.restored.shape == (3, 44, 60)
    assert torch.equal(rest.restored, twice)  # each pass restores the one before
    assert torch.allclose(rest.degraded, enlarge(small, 4).clamp(0, 1))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] and len({t for _, t in seen}) == 1
    size = session.img_size
    assert sr_tile_count(session, 11, 15, 4) == tile_count(22, 30, size) + tile_count(44, 60, size)
    from fastapi.testclient import TestClient

    from enfold.runtime.budget import WorkBudget
    from enfold.runtime.server import create_app

    last_pass = tile_count(44, 60, size)  # a budget the last pass fits, both passes do not
    app = create_app(session, budget=WorkBudget(max_tiles=last_pass))
    with TestClient(app) as client:
        r = client.post("/v1/restore", files={"file": ("s.png", encode_png(small))},
                        data={"task": "sr", "scale": "4"})
    assert r.status_code == 413 and "max_tiles" in r.text, r.text
    x4 = SimpleNamespace(corrupt={"sr": {"factor": 4}})
    assert sr_passes(x4, 4) == 1 and sr_passes(session.metadata, 4) == 2
    with pytest.raises(EnfoldError, match="no power of 4"):
        sr_passes(x4, 2)


# ----------------------------------------------------------------------------- mask


def test_a_free_form_mask_file_restores_only_inside_it(models, tmp_path, monkeypatch, capsys):
    from enfold.runtime import load
    from enfold.runtime.restore import restore_image

    h, w = 29, 37  # no multiple of the tile or the patch
    img, holes = _photo(h, w, seed=1), _blob_mask(h, w)
    inside = holes.bool().expand(3, h, w)
    for model in (models["mask"], models["mask-ts"]):  # eager and the exported graph
        session = load(model)
        assert session.restorer_inputs == ["mask"]
        rest = restore_image(session, img, "mask", mask=holes)
        assert torch.equal(rest.restored[~inside], img[~inside])  # untouched outside
        assert (rest.restored[inside] - img[inside]).abs().max() > 0  # restored inside
        assert (rest.degraded[inside] == 0).all()  # the holes hold the fill, pixel-exactly
    (tmp_path / "photo.png").write_bytes(encode_png(img))
    (tmp_path / "holes.png").write_bytes(encode_png(holes[None]))
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "photo.png"), "--model",
                     str(models["mask-ts"]), "--mask", str(tmp_path / "holes.png"),
                     "--out", str(tmp_path / "out"))
    assert code == 0, err
    out = decode_image(tmp_path / "out" / "photo.png", 3)
    original = decode_image(tmp_path / "photo.png", 3)
    assert torch.equal(out[~inside], original[~inside])
    assert (out[inside] - original[inside]).abs().max() > 0
    # a mask of another size is an error naming both sizes
    (tmp_path / "wrong.png").write_bytes(encode_png(torch.ones(1, 10, 12)))
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "photo.png"), "--model",
                     str(models["mask"]), "--mask", str(tmp_path / "wrong.png"),
                     "--out", str(tmp_path / "out2"))
    assert code == 1 and "12x10" in err and f"{w}x{h}" in err
    with _client(models["mask"]) as client:
        r = client.post("/v1/restore", files={"file": ("p.png", encode_png(img)),
                                              "mask": ("m.png", encode_png(holes[None]))},
                        data={"task": "mask"})
        assert r.status_code == 200, r.text
        got = decode_image(r.content, 3)
        assert torch.equal(got[~inside], original[~inside])
        r = client.post("/v1/restore", files={"file": ("p.png", encode_png(img)),
                                              "mask": ("m.png", encode_png(torch.ones(1, 4, 4)))},
                        data={"task": "mask"})
        assert r.status_code == 422 and "4x4" in r.json()["detail"]


def test_push_pull_fills_holes_smoothly_and_keeps_the_rest():
    from enfold.runtime.fill import push_pull_fill

    h, w = 45, 70
    yy, xx = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    ramp = torch.stack([xx, yy, 0.5 + 0.4 * xx * yy])  # smooth, like sky or skin
    holes = _blob_mask(h, w)[None]
    inside = holes[0].bool()
    filled = push_pull_fill(ramp * (1 - holes), holes)
    assert torch.equal(filled[:, ~inside], ramp[:, ~inside])  # known pixels untouched
    assert (filled - ramp).abs()[:, inside].max() < 0.08  # the flat fill is off by up to 0.95
    const = torch.full((3, h, w), 0.3)
    assert torch.allclose(push_pull_fill(const * (1 - holes), holes), const)
    nothing_known = torch.rand(3, h, w)
    assert torch.equal(push_pull_fill(nothing_known, torch.ones(1, h, w)), nothing_known)


def test_mask_tiles_start_from_the_whole_photo_fill(models):
    """The restorer is told where the holes are, so its tiles get the whole photo's smooth
    guess in them (``smooth_start``, the default) instead of the flat fill."""
    from enfold.runtime import load
    from enfold.runtime.restore import restore_image

    session = load(models["mask"])
    h, w = 40, 52
    img, holes = _photo(h, w, seed=2), _blob_mask(h, w)
    seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for smooth in (True, False):
        def run(tiles, mask, smooth=smooth):
            seen[smooth].append(tiles[mask.expand_as(tiles) > 0])
            return session.restore(tiles, mask=mask)

        restore_image(session, img, "mask", mask=holes, run=run, smooth_start=smooth)
    flat, smooth = torch.cat(seen[False]), torch.cat(seen[True])
    assert (flat == 0).all()  # the mask's fill
    assert smooth.min() > 0.1  # the photo's colours (0.2 and up), carried into the holes


# ----------------------------------------------------------------------------- gray


def test_a_gray_photo_comes_back_in_colour(models, tmp_path, monkeypatch, capsys):
    from enfold.runtime import load
    from enfold.runtime.restore import LUMA, restore_image

    session = load(models["gray"])
    colour = _photo(20, 26, seed=2)
    luma = (colour * torch.tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    one = restore_image(session, luma, "gray")  # a one-channel photo
    three = restore_image(session, colour, "gray")  # a colour photo is taken as its luma
    assert one.restored.shape == three.restored.shape == (3, 20, 26)
    assert torch.allclose(one.degraded, luma.expand(3, -1, -1))
    assert torch.allclose(one.restored, three.restored, atol=1e-5)
    Image.fromarray((luma[0].numpy() * 255).round().astype("uint8"), "L").save(
        tmp_path / "gray.png")
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "gray.png"), "--model",
                     str(models["gray"]), "--out", str(tmp_path / "out"))
    assert code == 0, err
    with Image.open(tmp_path / "out" / "gray.png") as out:
        assert out.mode == "RGB" and out.size == (26, 20)
    with _client(models["gray"]) as client:
        r = client.post("/v1/restore", files={"file": ("g.png", (tmp_path / "gray.png")
                                                       .read_bytes())})
        assert r.status_code == 200, r.text
        assert r.headers["X-Task"] == "gray"
        assert Image.open(io.BytesIO(r.content)).mode == "RGB"


# ----------------------------------------------------------------------------- simulate


def test_simulate_corrupts_first_and_reports_psnr(models, tmp_path, monkeypatch, capsys):
    img = _photo(24, 24)
    (tmp_path / "clean.png").write_bytes(encode_png(img))
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "clean.png"), "--model",
                     str(models["mask"]), "--simulate", "--out", str(tmp_path / "sim"))
    assert code == 0, err
    result = json.loads((tmp_path / "sim" / "restore.json").read_text())["results"][0]
    assert {"psnr_input", "psnr_restored"} <= set(result) and result["task"] == "mask"
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "clean.png"), "--model",
                     str(models["mask"]), "--out", str(tmp_path / "real"))
    assert code == 0, err
    result = json.loads((tmp_path / "real" / "restore.json").read_text())["results"][0]
    assert "psnr_input" not in result  # degraded by default: nothing to score against
    # --degraded is a hidden no-op for old scripts
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "clean.png"), "--model",
                     str(models["mask"]), "--degraded", "--out", str(tmp_path / "old"))
    assert code == 0, err
    with _client(models["mask"]) as client:
        r = client.post("/v1/restore", files={"file": ("c.png", encode_png(img))},
                        data={"simulate": "true", "seed": "2"})
        assert r.status_code == 200 and "X-PSNR-Restored" in r.headers
        r = client.post("/v1/restore", files={"file": ("c.png", encode_png(img))})
        assert r.status_code == 200 and "X-PSNR-Restored" not in r.headers


def test_the_cli_counts_an_enlargement_in_its_tile_budget(models, tmp_path, monkeypatch,
                                                          capsys):
    from enfold.runtime import load
    from enfold.runtime.budget import tile_count

    small = _photo(11, 15, seed=3)
    (tmp_path / "small.png").write_bytes(encode_png(small))
    size = load(models["sr"]).img_size
    fits_input = tile_count(11, 15, size)  # the low-resolution file alone is within it
    code, err = _cli(monkeypatch, capsys, str(tmp_path / "small.png"), "--model",
                     str(models["sr"]), "--scale", "4", "--max-tiles", str(fits_input),
                     "--out", str(tmp_path / "out"))
    assert code == 1 and "enlarged 4 times" in err and "--max-tiles" in err, err
    assert not (tmp_path / "out" / "small.png").exists()
