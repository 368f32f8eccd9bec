"""Tests for enfold.config: defaults, YAML deltas, base inheritance, overrides and type checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from enfold.config import (
    Config,
    CorruptConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    config_from_checkpoint,
    load_config,
    save_config,
    to_dict,
)
from enfold.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
PRETRAIN = CONFIGS / "pretrain"
SHIPPED = ["digits-tiny", "photos-tiny", "imagenet-vit-small", "imagenet-vit-base"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _error(path=None, overrides=None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, overrides)
    return str(exc.value)


# ----------------------------------------------------------------------------- defaults and deltas


def test_none_gives_defaults():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.train.max_steps == 300
    assert cfg.model.patch_size == 4
    assert cfg.corrupt.tasks == ["mask", "noise", "sr", "shuffle"]
    assert cfg.data.mean == [0.5, 0.5, 0.5]


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path / "empty.yaml", "")) == Config()


def test_delta_changes_only_its_keys(tmp_path):
    path = _write(tmp_path / "delta.yaml", "train:\n  max_steps: 12\nmodel:\n  depth: 3\n")
    cfg = load_config(path)
    assert cfg.train.max_steps == 12
    assert cfg.model.depth == 3
    expected = Config(
        train=dataclasses.replace(TrainConfig(), max_steps=12),
        model=dataclasses.replace(ModelConfig(), depth=3),
    )
    assert cfg == expected


def test_load_config_accepts_a_string_path(tmp_path):
    path = _write(tmp_path / "s.yaml", "eval:\n  every: 7\n")
    assert load_config(str(path)).eval.every == 7


def test_base_inheritance_two_levels(tmp_path):
    _write(tmp_path / "root.yaml",
           "model:\n  depth: 2\n  embed_dim: 64\ntrain:\n  max_steps: 10\n  seed: 5\n"
           "data:\n  mean: [0.1, 0.2, 0.3]\n")
    _write(tmp_path / "sub" / "mid.yaml",
           "base: ../root.yaml\nmodel:\n  depth: 4\ntrain:\n  warmup_steps: 3\n")
    leaf = _write(tmp_path / "sub" / "deeper" / "leaf.yaml",
                  "base: ../mid.yaml\nmodel:\n  num_heads: 2\ntrain:\n  seed: 9\n")
    cfg = load_config(leaf)
    # Nested sections merge key by key, nearer files win.
    assert cfg.model.depth == 4  # mid over root
    assert cfg.model.embed_dim == 64  # root
    assert cfg.model.num_heads == 2  # leaf
    assert cfg.model.arch == ModelConfig().arch  # default
    assert cfg.train.max_steps == 10  # root
    assert cfg.train.warmup_steps == 3  # mid
    assert cfg.train.seed == 9  # leaf over root
    assert cfg.data.mean == [0.1, 0.2, 0.3]
    assert cfg.data.std == DataConfig().std


def test_base_list_values_replace_not_merge(tmp_path):
    _write(tmp_path / "a.yaml", "corrupt:\n  tasks: [mask, shuffle, noise]\n")
    leaf = _write(tmp_path / "b.yaml", "base: a.yaml\ncorrupt:\n  tasks: [gray]\n")
    assert load_config(leaf).corrupt.tasks == ["gray"]


def test_base_loop(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\ntrain:\n  seed: 1\n")
    _write(tmp_path / "b.yaml", "base: c.yaml\n")
    _write(tmp_path / "c.yaml", "base: a.yaml\n")
    msg = _error(tmp_path / "a.yaml")
    assert "loop" in msg
    assert "a.yaml" in msg and "b.yaml" in msg and "c.yaml" in msg


def test_base_self_loop(tmp_path):
    path = _write(tmp_path / "self.yaml", "base: self.yaml\n")
    assert "loop" in _error(path)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "missing.yaml"
    msg = _error(missing)
    assert "not found" in msg
    assert str(missing.resolve()) in msg


def test_missing_base_names_the_base_path(tmp_path):
    path = _write(tmp_path / "child.yaml", "base: parent-missing.yaml\n")
    msg = _error(path)
    assert str((tmp_path / "parent-missing.yaml").resolve()) in msg


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path / "bad.yaml", "train: [1, 2\n")
    msg = _error(path)
    assert "bad.yaml" in msg and "YAML" in msg


def test_top_level_not_a_mapping(tmp_path):
    path = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    assert "mapping" in _error(path)


# ----------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(tmp_path):
    path = _write(tmp_path / "k.yaml", "trian:\n  max_steps: 5\n")
    msg = _error(path)
    assert "'trian'" in msg
    assert "did you mean train" in msg


def test_unknown_nested_key_names_dotted_key_and_suggests(tmp_path):
    path = _write(tmp_path / "k.yaml", "train:\n  max_step: 5\n")
    msg = _error(path)
    assert "'train.max_step'" in msg
    assert "did you mean train.max_steps" in msg


def test_unknown_nested_key_via_override():
    msg = _error(None, ["train.max_step=5"])
    assert "'train.max_step'" in msg
    assert "train.max_steps" in msg


def test_unknown_deeply_nested_key():
    msg = _error(None, ["corrupt.mask.ratoi=0.3"])
    assert "'corrupt.mask.ratoi'" in msg
    assert "corrupt.mask.ratio" in msg


# ----------------------------------------------------------------------------- overrides


def test_overrides_are_typed():
    cfg = load_config(None, [
        "train.max_steps=7",
        "train.base_lr=1e-3",
        "corrupt.tasks=[mask, noise]",
        "train.clip_grad=null",
        "model.energy_head=linear",
    ])
    assert cfg.train.max_steps == 7 and type(cfg.train.max_steps) is int
    assert cfg.train.base_lr == pytest.approx(1e-3) and type(cfg.train.base_lr) is float
    assert cfg.corrupt.tasks == ["mask", "noise"]
    assert cfg.train.clip_grad is None
    assert cfg.model.energy_head == "linear"
    # Everything else keeps its default.
    assert cfg.train.seed == TrainConfig().seed
    assert cfg.model.arch == ModelConfig().arch


def test_more_override_types():
    cfg = load_config(None, [
        "train.compile=false",
        "data.mean=[0.1, 0.2, 0.3]",
        "corrupt.weights=[2, 1]",
        "corrupt.tasks=[mask, sr]",
        "model.depth=6",
        "loss.step_weights=[0.5, 1]",
        "data.source=folder:/tmp/x=y",
    ])
    assert cfg.train.compile is False
    assert cfg.data.mean == [0.1, 0.2, 0.3]
    assert cfg.corrupt.weights == [2.0, 1.0] and all(type(w) is float for w in cfg.corrupt.weights)
    assert cfg.model.depth == 6
    assert cfg.loss.step_weights == [0.5, 1.0]
    assert cfg.data.source == "folder:/tmp/x=y"  # split on the first '=' only


def test_overrides_win_over_file(tmp_path):
    path = _write(tmp_path / "o.yaml", "train:\n  max_steps: 12\n  seed: 3\n")
    cfg = load_config(path, ["train.max_steps=99"])
    assert cfg.train.max_steps == 99
    assert cfg.train.seed == 3


def test_later_override_wins():
    assert load_config(None, ["train.seed=1", "train.seed=2"]).train.seed == 2


def test_float_field_accepts_int_and_yaml_string_forms(tmp_path):
    path = _write(tmp_path / "f.yaml", "train:\n  base_lr: 2.0e-4\n  min_lr: 0\n")
    cfg = load_config(path)
    assert cfg.train.base_lr == pytest.approx(2e-4)
    assert cfg.train.min_lr == 0.0 and type(cfg.train.min_lr) is float


# ----------------------------------------------------------------------------- type errors


def test_int_type_error():
    msg = _error(None, ["train.max_steps=abc"])
    assert "'train.max_steps'" in msg and "integer" in msg


def test_int_rejects_fractional_float():
    assert "'train.max_steps'" in _error(None, ["train.max_steps=1.5"])


def test_int_rejects_bool():
    assert "'train.max_steps'" in _error(None, ["train.max_steps=true"])


def test_bool_type_error():
    msg = _error(None, ["train.compile=maybe"])
    assert "'train.compile'" in msg and "true or false" in msg


def test_float_type_error():
    msg = _error(None, ["train.base_lr=fast"])
    assert "'train.base_lr'" in msg and "number" in msg


def test_literal_lists_choices():
    msg = _error(None, ["model.energy_head=quadratic"])
    assert "'model.energy_head'" in msg
    assert "sqnorm" in msg and "linear" in msg
    assert "quadratic" in msg


def test_literal_suggests_close_choice():
    msg = _error(None, ["corrupt.mask.fill=zeros"])
    assert "'corrupt.mask.fill'" in msg
    assert "did you mean 'zero'" in msg


def test_list_type_errors():
    msg = _error(None, ["corrupt.tasks=mask"])
    assert "'corrupt.tasks'" in msg and "list" in msg
    msg = _error(None, ["data.mean=[0.5, x, 0.5]"])
    assert "data.mean[1]" in msg


def test_optional_type_error():
    msg = _error(None, ["train.clip_grad=big"])
    assert "'train.clip_grad'" in msg


def test_string_type_error():
    assert "'train.device'" in _error(None, ["train.device=[cpu]"])


def test_section_given_as_scalar(tmp_path):
    path = _write(tmp_path / "s.yaml", "train: 5\n")
    msg = _error(path)
    assert "train" in msg and "mapping" in msg


def test_section_given_as_scalar_via_override():
    msg = _error(None, ["model=vit"])
    assert "model" in msg and "mapping" in msg


def test_override_without_equals():
    msg = _error(None, ["train.max_steps"])
    assert "train.max_steps" in msg
    assert "section.key=value" in msg


def test_override_with_empty_key():
    assert "empty key" in _error(None, ["=5"])


def test_null_section_means_defaults(tmp_path):
    path = _write(tmp_path / "n.yaml", "train:\neval:\n  every: 5\n")
    cfg = load_config(path)
    assert cfg.train == TrainConfig()
    assert cfg.eval.every == 5


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name):
    path = PRETRAIN / f"{name}.yaml"
    assert path.is_file(), path
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg != Config()
    assert cfg.model.img_size % cfg.model.patch_size == 0


def test_shipped_config_values():
    digits = load_config(PRETRAIN / "digits-tiny.yaml")
    assert digits.model.img_size == 16 and digits.model.patch_size == 2
    assert digits.corrupt.tasks == ["mask"]
    photos = load_config(PRETRAIN / "photos-tiny.yaml")
    assert photos.data.source == "photos:bundled"
    assert photos.model.depth == digits.model.depth == 4  # inherited from digits-tiny
    assert photos.corrupt.tasks == ["mask", "shuffle", "sr", "noise", "gray"]


def test_vit_base_inherits_from_vit_small():
    small = load_config(PRETRAIN / "imagenet-vit-small.yaml")
    base = load_config(PRETRAIN / "imagenet-vit-base.yaml")
    assert small.data.mean == pytest.approx([0.485, 0.456, 0.406])
    assert base.data.mean == small.data.mean
    assert base.data.std == small.data.std
    assert base.corrupt == small.corrupt
    assert base.model.arch == "vit_base_patch16_224"
    assert base.model.img_size == small.model.img_size == 224
    assert base.data.batch_size == 64 and small.data.batch_size == 128
    assert base.train.accum_steps == 8
    assert base.train.max_steps == small.train.max_steps


# ----------------------------------------------------------------------------- round trip


def test_save_and_load_round_trip_defaults(tmp_path):
    path = tmp_path / "saved.yaml"
    save_config(Config(), path)
    assert load_config(path) == Config()


def test_save_and_load_round_trip_custom(tmp_path):
    cfg = load_config(PRETRAIN / "imagenet-vit-base.yaml", [
        "train.clip_grad=null",
        "train.base_lr=1e-5",
        "loss.step_weights=[0.25, 1]",
        "model.energy_head=linear",
        "corrupt.noise.sigma_max=0.5",
    ])
    cfg.loss = dataclasses.replace(LossConfig(), kind="l1", margin_weight=0.3)
    cfg.corrupt = dataclasses.replace(cfg.corrupt, weights=[1.5, 1, 1, 1, 0.5])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.train.clip_grad is None
    assert loaded.train.base_lr == 1e-5
    # The saved file is a complete, plain mapping (no base link).
    raw = yaml.safe_load(path.read_text())
    assert "base" not in raw
    assert set(raw) == {f.name for f in dataclasses.fields(Config)}


def test_checkpoint_round_trip():
    cfg = load_config(None, ["corrupt.tasks=[mask, gray]", "model.depth=3"])
    assert config_from_checkpoint(to_dict(cfg)) == cfg
    assert isinstance(config_from_checkpoint(to_dict(cfg)).corrupt, CorruptConfig)
