"""Shared test helpers: a tiny model config, the CLI driven in this process, and the tiny
trained runs and exports that every test needing one shares (made once per session; see
tests/tiny_runs.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIGITS_TINY = ROOT / "configs" / "pretrain" / "digits-tiny.yaml"

# A model small enough that a training step takes milliseconds on 2 CPU cores.
TINY = [
    "model.img_size=8", "model.patch_size=2", "model.depth=1", "model.embed_dim=32",
    "model.num_heads=2", "data.batch_size=16", "train.warmup_steps=2",
    "eval.num_images=32", "eval.batch_size=32", "eval.grid_images=4",
]

# The warning filters a fresh interpreter starts with (pytest installs its own per test): the
# in-process CLI records warnings under these, the ones `enfold` would show in a shell.
_STARTUP_FILTERS = [("ignore", DeprecationWarning), ("ignore", PendingDeprecationWarning),
                    ("ignore", ImportWarning), ("ignore", ResourceWarning)]


def set_args(overrides: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for item in overrides for arg in ("--set", item)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train(stage: str, config: Path, out: Path, overrides: list[str],
          pretrained: Path | None = None) -> Path:
    """What ``enfold STAGE --config CONFIG --out OUT --no-compile --set ...`` does, in this
    process: for tests whose subject is not the CLI, a fresh interpreter's 10 s of imports
    (torch, timm, torchvision) is most of the cost. Returns the last checkpoint."""
    from enfold.config import load_config

    cfg = load_config(config, [*overrides, "train.compile=false"])
    if stage == "pretrain":
        from enfold.pipeline.pretrain import run_pretrain

        return Path(run_pretrain(cfg, out))
    from enfold.pipeline.finetune import run_finetune

    return Path(run_finetune(cfg, out, pretrained=pretrained))


def run_cli(*args: str, timeout: float | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """``enfold ARGS`` as a user runs it, in this process: through the console entry point
    (``enfold.cli.app:main``), so errors become one line and exit code 2 exactly as in a shell,
    with stdout and stderr captured. Python warnings are recorded, not printed (as pytest does):
    the result's ``warnings`` lists them, one formatted string each, under the filters a fresh
    interpreter starts with. ``timeout`` is accepted for callers written for a subprocess;
    pytest-timeout bounds a hang. Tests whose subject is a process boundary (signals, servers,
    imports of a fresh interpreter) use :func:`run_cli_process`."""
    del timeout
    from enfold.cli.app import main

    argv = ["enfold", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = argv
    try:
        with redirect_stdout(out), redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()  # also re-arms the once-per-place registries
            for action, category in _STARTUP_FILTERS:
                warnings.simplefilter(action, category, append=True)
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
    proc = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    proc.warnings = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                     for w in caught]
    if check and proc.returncode != 0:
        raise AssertionError(f"enfold {' '.join(argv[1:])} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli_process(*args: str, timeout: float = 600,
                    check: bool = True) -> subprocess.CompletedProcess:
    """Run ``enfold ARGS`` in a fresh interpreter (10 s of imports): only where the process
    boundary is the subject."""
    proc = subprocess.run(
        [sys.executable, "-m", "enfold.cli.app", *args], capture_output=True, text=True,
        timeout=timeout, env=cli_env(), cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"enfold {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def tiny_cfg():
    from enfold.config import load_config

    return load_config(DIGITS_TINY, [*TINY, "train.compile=false"])


DIGITS_TINY_STEPS = 100


@pytest.fixture(scope="session")
def digits_tiny_run(tmp_path_factory) -> Path:
    """digits-tiny pretrained for 100 eager steps, once per test session: its run directory.
    Tests that need a model which really restores (learning, runtime) share this run.

    100 steps already restore masked patches (+6.4 dB at step 100 of `make demo`'s 300-step run);
    eager, because compiling costs more than it saves over 100 steps on 2 cores; in this process,
    so it trains on both cores (the CLI subprocesses get one thread each).
    """
    out = tmp_path_factory.mktemp("digits-tiny") / "run"
    train("pretrain", DIGITS_TINY, out, [f"train.max_steps={DIGITS_TINY_STEPS}"])
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """The session's tiny pretrain and finetune checkpoints (tests/tiny_runs.py): ``{"pretrain":
    ckpt, "finetune": ckpt}``. Shared: a test that changes a run works on a copy."""
    from tiny_runs import session_tiny_runs

    return session_tiny_runs(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict[str, Any]:
    """The tiny runs plus their unvalidated exports (tests/tiny_runs.py ``shared_tiny``)."""
    from tiny_runs import shared_tiny

    return shared_tiny(tmp_path_factory)
