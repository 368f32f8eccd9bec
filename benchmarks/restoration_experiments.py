"""The restoration benchmark's experiments: what is trained and scored. The shipped restorers
(one config each), the classical methods each is compared with, the goals, the inference steps
and grids measured, and the ablation variants. Run by ``restoration_runs``, reported by
``restoration_report``, from the command line of ``restoration.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from common import ROOT

from enfold.config import Config, load_config

CONFIGS = ROOT / "configs" / "pretrain"
# name -> the shipped config, whose corruption section also defines the benchmark's task
TASKS = {"noise": "restore-noise.yaml", "sr": "restore-sr.yaml", "sr4": "restore-sr4.yaml",
         "mask": "restore-mask.yaml", "gray": "restore-gray.yaml",
         "shuffle": "restore-shuffle.yaml"}
LABELS = {"input": "degraded input", "enfold": "enfold", "tv": "TV (Chambolle)",
          "nl_means": "non-local means", "bm3d": "BM3D", "bicubic": "bicubic (true low-res)",
          "biharmonic": "biharmonic inpainting"}
CLASSICAL = {"noise": ("tv", "nl_means", "bm3d"), "sr": ("bicubic",), "sr4": ("bicubic",),
             "mask": ("biharmonic",), "gray": (), "shuffle": ()}
# the goals: enfold >= anchor + margin dB (anchor: the best of these methods), and never
# below the degraded input
GOALS = {"noise": (CLASSICAL["noise"], 1.0), "sr": (("bicubic",), 1.0),
         "sr4": (("bicubic",), 1.0), "mask": (("biharmonic",), 1.0), "gray": (("input",), 3.0),
         "shuffle": (("input",), 3.0)}
KS = range(1, 9)
# restorers exported with their energy averaged over 4 patch grids (as `make restorers` does);
# the others use one grid, which the grid-shift table shows is as good or better for them
SHIPPED_GRID_SHIFTS = {"noise": 4}
CHUNK = 64  # images per restoration call
# the factors tried on a model's learned step sizes per task, and the corruption seed of the
# training-photo crops they are chosen on
STEP_SCALES = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)
CALIBRATION_SEED = 7


@dataclass(frozen=True)
class Ablation:
    """One variant: ``overrides`` of the shipped config of ``task`` (``mixed``: of
    restore-base.yaml), scored on ``scored`` tasks; ``budget`` x the specialists' steps, or
    ``steps`` exactly (variants measured at an earlier, shorter budget)."""

    task: str
    name: str
    overrides: tuple[str, ...]
    scored: tuple[str, ...] = ()
    budget: int = 1
    steps: int | None = None
    per_task_steps: bool = False  # also score with step sizes calibrated per task

    @property
    def dirname(self) -> str:
        return f"{self.task}-" + "".join(c if c.isalnum() else "-" for c in self.name.lower())


# a variant repeated with another training seed is named "<variant>, seed N" (no suffix: seed 0)
SEEDED = re.compile(r"^(?P<variant>.*), seed (?P<seed>\d+)$")
# a task's shipped config with other training seeds; its seed 0 is the shipped restorer
SHIPPED = "shipped recipe"
# per task, the variant the other seeded variants are compared with, seed by seed
SEED_BASELINES = {"noise": "600 steps", "gray": SHIPPED}
ALL = tuple(t for t in TASKS if t != "sr4")  # the tasks one mixed model trains on
SHORT_WARMUP = "train.warmup_steps=50"  # the 300- and 600-step recipes' warmup (the long ones: 100)
PER_IMAGE_LOG = "loss.reduction=per_image_log"
NOISE_RANGE = ("corrupt.noise.sigma=0.05", "corrupt.noise.sigma_max=0.2")
# the mask recipe before 512 biharmonic sweeps, before the per-image log loss, and before the
# biharmonic flow
MASK_256 = "model.fill_biharmonic=256"
# the noise recipe before the linear energy head
NOISE_SQNORM = "model.energy_head=sqnorm"
NOISE_SHORT = (SHORT_WARMUP, NOISE_SQNORM)  # the 600-step noise variants' base
# the noise variants repeated over training seeds, each with its switch
NOISE_600 = (("600 steps", (NOISE_SQNORM,)),
             ("linear energy head", ("model.energy_head=linear",)),
             ("reconstruction energy", ("model.energy_head=recon",)))
MASK_POOLED = (MASK_256, "loss.reduction=pooled")
MASK_BEFORE = ("model.fill_biharmonic=0", "loss.reduction=pooled")
ABLATIONS = [
    Ablation("sr", "consistency off", ("model.consistency=false", SHORT_WARMUP), steps=600),
    Ablation("sr", "600 steps", (SHORT_WARMUP,), steps=600),
    Ablation("sr4", "300 steps", (SHORT_WARMUP,), steps=300),
    # the start of the previous mask recipe alone scores 29.39 dB (256 sweeps of the biharmonic
    # flow) and 29.48 with 512 (no gain beyond): 512 is shipped, and the rows below keep 256
    Ablation("mask", "256 biharmonic sweeps", (MASK_256,)),
    # that recipe with other training seeds
    Ablation("mask", "256 biharmonic sweeps, seed 1", (MASK_256, "train.seed=1")),
    Ablation("mask", "256 biharmonic sweeps, seed 2", (MASK_256, "train.seed=2")),
    Ablation("mask", "K=2", (MASK_256, "model.steps=2")),
    # the mask variants before the per-image log loss, from the pooled loss (MASK_POOLED)
    Ablation("mask", "pooled loss", MASK_POOLED),
    Ablation("mask", "initial step size 0.3", (*MASK_POOLED, "model.step_size=0.3")),
    Ablation("mask", "harmonic start only", MASK_BEFORE),
    # the earlier mask variants, from the harmonic start (MASK_BEFORE)
    Ablation("mask", "no hole fill", (*MASK_BEFORE, "model.fill_holes=0")),
    Ablation("mask", "2000 steps", MASK_BEFORE, steps=2000),
    # the hole fill needs the mask the projection knows, so both go
    Ablation("mask", "consistency off", (*MASK_BEFORE, "model.consistency=false",
                                         "model.fill_holes=0")),
    Ablation("gray", "consistency off", ("model.consistency=false",)),
    # consistency off won on one seed: both with two more
    *(Ablation("gray", f"{name}, seed {seed}", (*switch, f"train.seed={seed}"))
      for name, switch in ((SHIPPED, ()), ("consistency off", ("model.consistency=false",)))
      for seed in (1, 2)),
    Ablation("gray", "300 steps", (SHORT_WARMUP,), steps=300),
    Ablation("shuffle", "300 steps", (SHORT_WARMUP,), steps=300),
    Ablation("shuffle", "1500 steps", (), steps=1500),
    # the shipped noise recipe before the linear energy head
    Ablation("noise", "sqnorm energy head", (NOISE_SQNORM,)),
    # the noise variants are measured at 600 steps against the recipe of their time (the sqnorm
    # head) at 600 steps (the noise-600-steps row)
    Ablation("noise", "600 steps", NOISE_SHORT, steps=600),
    Ablation("noise", "linear energy head", (SHORT_WARMUP, "model.energy_head=linear"), steps=600),
    Ablation("noise", "reconstruction energy", (SHORT_WARMUP, "model.energy_head=recon"),
             steps=600),
    Ablation("noise", "K=2", (*NOISE_SHORT, "model.steps=2"), steps=600),
    Ablation("noise", "bundled photos", (*NOISE_SHORT, "data.source=photos:bundled"), steps=600),
    Ablation("noise", "L1 loss", (*NOISE_SHORT, "loss.kind=l1"), steps=600),
    # the 600-step winners and their baseline with two more training seeds each
    *(Ablation("noise", f"{name}, seed {seed}", (SHORT_WARMUP, *switch, f"train.seed={seed}"),
               steps=600)
      for name, switch in NOISE_600 for seed in (1, 2)),
    # capacity at the CPU time of 600 base steps (one thread: base 585 ms a step, depth 6 794,
    # width 192 1383, patch 8 117, patch 2 3883, which would get 90 steps and is left out)
    Ablation("noise", "depth 6, equal time", (*NOISE_SHORT, "model.depth=6"), steps=440),
    Ablation("noise", "width 192, equal time", (*NOISE_SHORT, "model.embed_dim=192"), steps=250),
    Ablation("noise", "patch 8, equal time", (*NOISE_SHORT, "model.patch_size=8"), steps=3000),
    # K=2 (the largest single-run gain at 600 steps) at the time of the sqnorm recipe's 3,000
    # steps: K=2 costs 976 ms a step
    Ablation("noise", "K=2, equal time", (NOISE_SQNORM, "model.steps=2"), steps=1800),
    # the loss that matches the score: the mean over images of log(region MSE), i.e. the mean
    # PSNR, against the pooled MSE, where hard images outweigh smooth ones. Each against its
    # shorter recipe (noise-600-steps, gray-300-steps, sr4-300-steps); for mask it won and is
    # shipped (the mask-pooled-loss row)
    Ablation("noise", "per-image log loss", (*NOISE_SHORT, PER_IMAGE_LOG), steps=600),
    # one model for noise levels 0.05 to 0.2, blind or told sigma (scored at 0.1, against the
    # specialist for 0.1 at the same 600 steps)
    Ablation("noise", "sigma 0.05-0.2, blind", (*NOISE_SHORT, *NOISE_RANGE), steps=600),
    Ablation("noise", "sigma 0.05-0.2, noise level input",
             (*NOISE_SHORT, *NOISE_RANGE, "model.noise_level_input=true"), steps=600),
    Ablation("gray", "per-image log loss", (SHORT_WARMUP, PER_IMAGE_LOG), steps=300),
    # the noise winner on the other tasks, each against its shorter recipe
    *(Ablation(task, "linear energy head", (SHORT_WARMUP, "model.energy_head=linear"), steps=n)
      for task, n in (("sr", 600), ("sr4", 300), ("gray", 300), ("shuffle", 300))),
    Ablation("sr4", "per-image log loss", (SHORT_WARMUP, PER_IMAGE_LOG), steps=300),
    # specialists vs one model at the same total budget: 5 tasks, 5x the steps, scored everywhere,
    # with its learned step sizes and with step sizes per task (the task is in the artifact)
    Ablation("mixed", "one model for all tasks",
             (f"corrupt.tasks=[{', '.join(ALL)}]", "model.consistency=false", "model.steps=2"),
             scored=tuple(TASKS), budget=5, per_task_steps=True),
]


def task_config(task: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The shipped config of ``task`` (``mixed``: restore-base.yaml) with ``overrides``."""
    return load_config(CONFIGS / TASKS.get(task, "restore-base.yaml"), list(overrides))
