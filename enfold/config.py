"""Typed configuration: defaults in code, deltas in YAML, overrides on the command line.

A YAML file holds only what differs from the defaults below and may name a ``base:`` file (a path
relative to itself) to inherit from. ``--set a.b=value`` overrides one key; the value is parsed as
YAML and then checked against the field's type. An unknown key is an error that names the key and
the closest valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from enfold.errors import ConfigError


@dataclass
class ModelConfig:
    """The energy ViT: a timm architecture plus the restoration settings."""

    arch: str = "vit_tiny_patch16_224"  # any timm VisionTransformer name
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    depth: int | None = None  # None: the architecture's own depth
    embed_dim: int | None = None
    num_heads: int | None = None
    drop_path: float = 0.0
    energy_head: Literal["sqnorm", "linear", "recon"] = "sqnorm"  # recon: 0.5 ||x - N(x)||^2
    steps: int = 2  # K, restoration steps during training
    step_size: float = 0.1  # initial alpha_k
    learn_step_sizes: bool = True
    langevin_noise: float = 0.0  # std of Gaussian noise added after each training step
    # single-task restorers: project every step back onto the images that agree with the input
    # (mask: visible pixels, sr: the low-resolution image, gray: the luma)
    consistency: bool = False
    # mask restorers: Jacobi sweeps of a harmonic fill that give the steps a smooth first guess
    # instead of the flat fill (0: start from the corrupted input)
    fill_holes: int = 0
    # then iterations of a biharmonic (thin-plate) flow with momentum, which continues the
    # surrounding gradients into the holes instead of flattening them (0: off)
    fill_biharmonic: int = 0
    # "last": backpropagate through the last restoration step only (earlier ones detached)
    backprop_steps: Literal["all", "last"] = "all"
    # noise restorers: the caller gives the noise level sigma and every step is scaled by
    # (sigma / sigma_ref)^2, as the best denoising step x + sigma^2 * score(x) scales; sigma_ref
    # is the centre (geometric mean) of corrupt.noise's range. Training reads sigma off each
    # noisy/clean pair
    noise_level_input: bool = False
    # what restores: the energy ViT (the method), or a learned peer trained by the same trainer
    # for comparison: the same ViT as a direct residual regressor, or a DnCNN-style CNN of equal
    # parameters (enfold/model/peers.py)
    restorer: Literal["energy", "direct_vit", "dncnn"] = "energy"
    # the dncnn peer's width (None: as wide as makes its parameters match the ViT's)
    dncnn_width: int | None = None


@dataclass
class LossConfig:
    """How the restored image is compared with the clean one."""

    kind: Literal["mse", "l1", "smooth_l1"] = "mse"
    region: Literal["corrupted", "all"] = "corrupted"
    # pooled: one mean over the batch's region; per_image_log: the mean over images of
    # log(each image's region error), which with mse is the negative mean PSNR up to constants,
    # so easy (smooth) images weigh as much as hard ones
    reduction: Literal["pooled", "per_image_log"] = "pooled"
    step_weights: list[float] | None = None  # one weight per step; None: last step only
    margin_weight: float = 0.0  # weight of the clean-below-corrupted energy margin term
    margin: float = 1.0


@dataclass
class DataConfig:
    """Where images come from and how they are normalised."""

    source: str = "digits"  # digits | fashion-mnist[:PATH] | photos | photos:bundled | folder:PATH
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    batch_size: int = 64  # per process and micro-step
    num_workers: int = 0
    crops_per_epoch: int = 4096  # photos: random crops that make one epoch
    holdout_fraction: float = 0.05  # folder without train/ and val/: share held out
    crop_scale_min: float = 0.35  # random-resized-crop lower scale (photos:bundled, folder)
    # photos: each photo is reduced once so its shorter side is at most this many pixels, then
    # crops span img_size to img_size * crop_max_zoom of its pixels (1 = native resolution)
    photo_short_side: int = 512
    crop_max_zoom: float = 1.5
    hflip: bool = True
    labels_per_class: int | None = None  # fine-tuning: keep N labelled images per class (seeded)


@dataclass
class MaskConfig:
    ratio: float = 0.5
    patch_size: int | None = None  # None: the model's patch size
    fill: Literal["zero", "noise", "mean"] = "zero"
    # probability that a sample gets free-form holes (strokes, blobs, boxes at any pixel offset)
    # instead of patch holes; 0 keeps the patch holes only
    freeform: float = 0.0


@dataclass
class ShuffleConfig:
    fraction: float = 0.5
    patch_size: int | None = None


@dataclass
class SRConfig:
    factor: int = 2


@dataclass
class NoiseConfig:
    sigma: float = 0.1
    sigma_max: float | None = None  # set to draw sigma uniformly from [sigma, sigma_max]


@dataclass
class GrayConfig:
    pass


@dataclass
class CorruptConfig:
    """The pretext tasks. Several tasks train as a per-sample mixture."""

    # the ablation's winner over masking alone (docs/RESULTS.md); gray is left out because it
    # does nothing to gray images such as digits
    tasks: list[str] = field(default_factory=lambda: ["mask", "noise", "sr", "shuffle"])
    weights: list[float] | None = None  # mixture weights, one per task; None: uniform
    mask: MaskConfig = field(default_factory=MaskConfig)
    shuffle: ShuffleConfig = field(default_factory=ShuffleConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    gray: GrayConfig = field(default_factory=GrayConfig)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping, shared by every stage."""

    max_steps: int = 300  # optimizer steps
    base_lr: float = 1.5e-4  # lr = base_lr * effective_batch / lr_batch_base
    lr_batch_base: int = 256
    # floor of the cosine decay, on base_lr's scale: multiplied by effective_batch / lr_batch_base
    # as base_lr is (MAE's min_lr is an absolute rate)
    min_lr: float = 0.0
    warmup_steps: int = 20
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    accum_steps: int = 1
    clip_grad: float | None = 1.0
    bf16: bool = False
    compile: bool = True
    grad_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10
    ckpt_every: int = 100
    # also keep a copy of the checkpoint at these steps (checkpoint-step<N>.pt): snapshots of
    # one run, e.g. for accuracy against pretraining length
    keep_steps: list[int] = field(default_factory=list)
    # stop (checkpointed, resumable) after this many steps while the lr schedule still spans
    # max_steps: a long run trained in pieces; None: run to max_steps
    stop_after: int | None = None


@dataclass
class EvalConfig:
    """Held-out evaluation during training."""

    every: int = 100  # steps between evaluations; 0: only at the end
    num_images: int = 256
    batch_size: int = 64
    grid_images: int = 8
    seed: int = 1234
    knn: bool = False  # pretraining: also monitor kNN accuracy of the features (labelled data)
    knn_train_images: int = 5000  # labelled training images the kNN monitor indexes at most


@dataclass
class FinetuneConfig:
    """Classification from a pretrained (or fresh) ViT."""

    mode: Literal["full", "linear", "knn"] = "full"
    layer_decay: float = 0.75  # lr of block i scales by layer_decay^(depth - i)
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha; 0 disables
    cutmix: float = 0.0  # cutmix alpha; 0 disables
    mixup_prob: float = 1.0
    knn_k: int = 20
    knn_temperature: float = 0.07


@dataclass
class Config:
    """The whole run configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# ----------------------------------------------------------------------------- loading

QUOTE_CHARS = 200  # longest quoted value in an error message


def shown(value: Any) -> str:
    """``repr(value)`` cut to :data:`QUOTE_CHARS` characters, for error messages: a hostile
    value (a huge list, a long string) must not become megabytes of error text."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text)} chars)"


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (``*name``): a few hundred bytes of nested aliases
    expand to gigabytes ("billion laughs"), and configs do not need them (``base:`` inherits)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise ConfigError(f"YAML aliases (*{shown(event.anchor)[1:-1]}, line {line}) are not "
                              "allowed in enfold configs; write the value out, or use base: to "
                              "inherit a file")
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML through :class:`_ConfigLoader`; errors name ``where``, one line."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        what = " ".join(str(exc).split())
        raise ConfigError(f"{where} is not valid YAML: {what[:QUOTE_CHARS]}") from None


def load_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``base:`` links, and return the merged raw mapping."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"config files inherit from each other in a loop: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = load_yaml_with_bases(path.parent / base, (*_seen, path))
    return deep_merge(parent, raw)


def deep_merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``delta``; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into a key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(
            f"override {shown(item)} must look like section.key=value (e.g. train.max_steps=50)"
        )
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {shown(item)} has an empty key")
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else ""
    except ConfigError as exc:
        if "aliases" in str(exc):
            raise
        value = text  # not YAML: the text itself (a path, a name)
    return key.split("."), value


def apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from an optional YAML file and ``key=value`` overrides."""
    raw = load_yaml_with_bases(path) if path is not None else {}
    for item in overrides or []:
        keys, value = parse_override(item)
        apply_override(raw, keys, value)
    cfg = from_dict(Config, raw)
    check_sizes(cfg)
    return cfg


def from_dict(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a raw mapping, checking every key and value."""
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where} must be a mapping, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{shown(key)[1:-1] if isinstance(key, str) else shown(key)}"
        if key not in names:
            close = difflib.get_close_matches(str(key)[:QUOTE_CHARS], names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else "."
            raise ConfigError(
                f"unknown config key '{dotted}'{hint} Valid keys here: {', '.join(names)}."
            )
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, dotted: str) -> Any:
    """Check ``value`` against type ``tp`` (dataclass, Optional, Literal, list, scalars)."""
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, dotted + ".")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _coerce(candidate, value, dotted)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value)[:QUOTE_CHARS], [str(a) for a in args],
                                              n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"'{dotted}' must be one of {list(args)}, got {shown(value)}{hint}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{dotted}' must be a list, got {shown(value)}")
        return [_coerce(args[0], v, f"{dotted}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{dotted}' must be true or false, got {shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _in_range(value, dotted)
        if isinstance(value, float) and value.is_integer():
            return _in_range(int(value), dotted)
        raise ConfigError(f"'{dotted}' must be an integer, got {shown(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{dotted}' must be a number, got {shown(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{dotted}' must be a string, got {shown(value)}")
    raise ConfigError(f"'{dotted}': unsupported type {tp}")  # a bug in the schema, not user input


# Integer keys that size an allocation or a loop, with the range they may take: a value past the
# upper bound is a typo or an attack (data.batch_size: 1e10 asked for terabytes), refused with
# the key named instead of a MemoryError deep inside PyTorch.
INT_RANGES: dict[str, tuple[int | None, int]] = {
    "model.img_size": (1, 4096),
    "model.patch_size": (1, 1024),
    "model.in_chans": (1, 3),
    "model.depth": (1, 256),
    "model.embed_dim": (1, 16384),
    "model.num_heads": (1, 256),
    "model.steps": (1, 1000),
    # None: the lower bound is checked where the key is used, with its own message
    "model.fill_holes": (None, 100_000),
    "model.fill_biharmonic": (None, 100_000),
    "model.dncnn_width": (1, 16384),
    "data.batch_size": (1, 65_536),
    "data.num_workers": (0, 1024),
    "data.crops_per_epoch": (1, 100_000_000),
    "data.photo_short_side": (1, 65_536),
    "data.labels_per_class": (1, 10_000_000),
    "corrupt.mask.patch_size": (1, 1024),
    "corrupt.shuffle.patch_size": (1, 1024),
    "corrupt.sr.factor": (1, 64),
    "train.max_steps": (1, 1_000_000_000),
    "train.lr_batch_base": (1, 10_000_000),
    "train.warmup_steps": (0, 1_000_000_000),
    "train.accum_steps": (1, 65_536),
    "train.log_every": (1, 1_000_000_000),
    "train.ckpt_every": (1, 1_000_000_000),
    "eval.every": (0, 1_000_000_000),
    "eval.num_images": (1, 10_000_000),
    "eval.batch_size": (1, 65_536),
    "eval.grid_images": (0, 1024),
    "eval.knn_train_images": (1, 10_000_000),
    "finetune.knn_k": (1, 100_000),
}
MAX_TOKENS = 16_384  # (img_size / patch_size)^2: attention memory grows with its square


def _in_range(value: int, dotted: str) -> int:
    """``value`` if ``dotted`` has no range or it lies inside; else a one-line error."""
    bounds = INT_RANGES.get(dotted)
    if bounds is None:
        return value
    lo, hi = bounds
    if lo is None and value > hi:
        raise ConfigError(f"'{dotted}' must be at most {hi:,}, got {value:,}")
    if lo is not None and not lo <= value <= hi:
        raise ConfigError(f"'{dotted}' must be between {lo:,} and {hi:,}, got {value:,}")
    return value


def check_sizes(cfg: Config) -> None:
    """Limits that join two keys: the number of patch tokens of one image."""
    tokens = (cfg.model.img_size // cfg.model.patch_size) ** 2
    if tokens > MAX_TOKENS:
        raise ConfigError(f"model.img_size {cfg.model.img_size} with model.patch_size "
                          f"{cfg.model.patch_size} makes {tokens:,} patch tokens per image; at "
                          f"most {MAX_TOKENS:,} (raise model.patch_size or lower model.img_size)")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain containers (for YAML files and checkpoints)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def config_from_checkpoint(raw: dict[str, Any]) -> Config:
    """Rebuild the config stored in a checkpoint."""
    return from_dict(Config, raw)
