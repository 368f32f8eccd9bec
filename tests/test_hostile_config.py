"""Hostile configs: YAML aliases that expand to gigabytes ("billion laughs"), in a file or a
--set; values that size an allocation (data.batch_size: 1e10, model.img_size: 100000); error
messages that would quote megabytes. Each is one short error line naming the key, at once."""

from __future__ import annotations

import time

import pytest
from conftest import DIGITS_TINY
from test_hostile import assert_one_line_error, cli

from enfold.config import load_config
from enfold.errors import ConfigError


def laughs(levels: int) -> str:
    """A YAML mapping whose ``levels`` nested aliases expand to 9**levels strings."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_in_a_config_file_is_refused_at_once(tmp_path, monkeypatch, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"data:\n  source: digits\nlaughs:\n{laughs(8)}".replace(
        "\na", "\n  a"))
    assert len(bomb.read_bytes()) < 800
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases") as exc:
        load_config(bomb)
    assert time.perf_counter() - start < 1.0
    assert str(bomb) in str(exc.value) and len(str(exc.value)) < 400
    code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(bomb), "--out",
                    str(tmp_path / "run"))
    assert_one_line_error(code, err, "aliases", "line ")
    assert not (tmp_path / "run").exists()


def test_billion_laughs_through_set_is_refused(tmp_path, monkeypatch, capsys):
    flow = "{" + ", ".join(laughs(6).strip().splitlines()) + "}"  # one line, 9**6 strings
    start = time.perf_counter()
    code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(DIGITS_TINY), "--out",
                    str(tmp_path / "run"), "--set", f"data.mean={flow}")
    assert time.perf_counter() - start < 5.0
    assert_one_line_error(code, err, "--set data.mean", "aliases")
    assert len(err) < 400


def test_error_messages_quote_at_most_200_characters_of_a_value(tmp_path, monkeypatch, capsys):
    huge = "[" + ",".join(["0"] * 1_000) + "]"  # 2 KB: its repr is cut
    for key in ("data.source", "model.energy_head", "train.compile", "model.img_size"):
        code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(DIGITS_TINY), "--out",
                        str(tmp_path / "run"), "--set", f"{key}={huge}")
        assert_one_line_error(code, err, key)
        assert len(err) < 500, (key, len(err))
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["x" * 100_000 + "=1"])
    assert len(str(exc.value)) < 800


@pytest.mark.parametrize("override, key", [
    ("data.batch_size=1.0e+10", "data.batch_size"),
    ("data.batch_size=10000000000", "data.batch_size"),
    ("model.img_size=100000", "model.img_size"),
    ("model.embed_dim=10000000", "model.embed_dim"),
    ("model.depth=100000", "model.depth"),
    ("model.num_heads=0", "model.num_heads"),
    ("model.steps=100000000", "model.steps"),
    ("data.crops_per_epoch=1.0e+12", "data.crops_per_epoch"),
    ("eval.num_images=1.0e+12", "eval.num_images"),
    ("eval.batch_size=1.0e+9", "eval.batch_size"),
    ("train.accum_steps=0", "train.accum_steps"),
    ("model.patch_size=1", "model.patch_size"),  # 32 x 32 image: 1024 tokens is fine ...
])
def test_sizes_that_allocate_are_range_checked_with_the_key_named(override, key, tmp_path,
                                                                  monkeypatch, capsys):
    extra = ["--set", "model.img_size=1024"] if override == "model.patch_size=1" else []
    start = time.perf_counter()
    code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(DIGITS_TINY), "--out",
                    str(tmp_path / "run"), *extra, "--set", override)
    assert time.perf_counter() - start < 10.0
    assert_one_line_error(code, err, key)  # ... but 1024 x 1024 in 1-pixel patches is not
    assert "MemoryError" not in err and not (tmp_path / "run").exists()


def test_every_shipped_config_is_inside_the_ranges():
    from conftest import ROOT

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        load_config(path)
