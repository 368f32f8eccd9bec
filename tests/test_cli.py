"""The CLI as a user runs it: help, errors, a tiny pretraining run, pictures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import yaml
from conftest import DIGITS_TINY, ROOT, TINY, cli_env, run_cli, set_args
from PIL import Image

from enfold.checkpoint.store import load_checkpoint
from enfold.config import load_config


def test_help_lists_the_stages_and_needs_no_optional_library():
    # a fresh interpreter (what it imports is the subject): `enfold --help` through the console
    # entry point, then the training stage's imports, and no optional library among them
    probe = ("import sys\n"
             "from enfold.cli.app import main\n"
             "sys.argv = ['enfold', '--help']\n"
             "try:\n"
             "    main()\n"
             "except SystemExit as exc:\n"
             "    assert exc.code in (0, None), exc.code\n"
             "import enfold.pipeline.pretrain\n"
             "print('optional:', [m for m in ('tensorrt', 'onnxruntime', 'pycuda') "
             "if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=ROOT, env=cli_env())
    *help_text, last = result.stdout.strip().splitlines()
    for command in ("pretrain", "finetune", "evaluate", "export", "validate", "visualize"):
        assert command in "\n".join(help_text)
    assert last == "optional: []"


def test_unknown_config_key_fails_with_a_message_naming_it(tmp_path):
    proc = run_cli("pretrain", "--config", str(DIGITS_TINY), "--out", str(tmp_path / "r"),
                   "--set", "train.max_step=5", check=False)
    assert proc.returncode == 2
    assert "unknown config key 'train.max_step'" in proc.stderr
    assert "did you mean train.max_steps" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing written for a bad config

    bad = tmp_path / "bad.yaml"
    bad.write_text("base: " + str(DIGITS_TINY) + "\nmodle:\n  depth: 2\n")
    proc = run_cli("pretrain", "--config", str(bad), "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "unknown config key 'modle'" in proc.stderr
    assert "did you mean model" in proc.stderr


def test_validate_with_a_bad_batch_list_is_a_clean_error(tmp_path):
    proc = run_cli("validate", str(tmp_path / "x.onnx"), "--checkpoint", str(tmp_path / "c.pt"),
                   "--batches", "1,x", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--batches '1,x' must be comma-separated integers" in proc.stderr


def test_tiny_pretrain_writes_config_checkpoint_metrics_and_grids(tmp_path):
    out = tmp_path / "run"
    overrides = [*TINY, "train.max_steps=12", "eval.every=6", "corrupt.tasks=[mask, noise]"]
    run_cli("pretrain", "--config", str(DIGITS_TINY), "--out", str(out), "--no-compile",
            *set_args(overrides))
    # the resolved config is saved and loads back to the same thing
    saved = load_config(out / "config.yaml")
    assert saved == load_config(DIGITS_TINY, [*overrides, "train.compile=false"])
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 12
    state = load_checkpoint(out / "checkpoint-last.pt")
    assert state["step"] == 12 and state["stage"] == "pretrain"
    assert {"torch", "timm", "python"} <= set(state["versions"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    evals = [r for r in records if "eval/mask/psnr_input" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert all(np.isfinite(r["eval/noise/psnr_restored"]) for r in evals)
    train = [r for r in records if "loss" in r]
    assert train and all(len(r["step_sizes"]) == 2 for r in train)
    grids = sorted(p.name for p in (out / "grids").iterdir())
    assert grids == ["step000006-mask.png", "step000006-noise.png",
                     "step000012-mask.png", "step000012-noise.png"]

    picture = tmp_path / "mask.png"
    result = run_cli("visualize", "--checkpoint", str(out / "checkpoint-last.pt"),
                     "--task", "mask", "--out", str(picture), "--num", "3")
    assert "eval/mask/psnr_restored" in result.stdout
    img = Image.open(picture)
    # 3 rows x (corrupted, 2 steps, clean), 8 px images scaled to 64 px with 1 px padding
    assert img.size[0] > img.size[1] > 0


def test_visualize_rejects_unknown_task(tiny_runs, tmp_path):
    proc = run_cli("visualize", "--checkpoint", str(tiny_runs["pretrain"]), "--task",
                   "masks", "--out", str(tmp_path / "x.png"), check=False)
    # Typer refuses it, naming the tasks
    assert proc.returncode == 2 and "'masks' is not one of 'mask', 'shuffle'" in proc.stderr


def test_non_finite_loss_stops_the_cli_run_with_a_message(tmp_path):
    proc = run_cli("pretrain", "--config", str(DIGITS_TINY), "--out", str(tmp_path / "r"),
                   "--no-compile", *set_args([*TINY, "train.max_steps=3",
                                              "model.step_size=1e30"]), check=False)
    assert proc.returncode == 2
    assert "non-finite loss" in proc.stderr and "Traceback" not in proc.stderr


def test_folder_source_trains_and_skips_unreadable_files(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "dogs" / "broken.png").write_bytes(b"not an image")
    proc = run_cli("pretrain", "--config", str(DIGITS_TINY), "--out", str(tmp_path / "r"),
                   "--no-compile", *set_args([*TINY, "train.max_steps=2",
                                              f"data.source=folder:{tmp_path / 'imgs'}",
                                              "data.holdout_fraction=0.25"]))
    assert (tmp_path / "r" / "checkpoint-last.pt").exists()
    assert any("broken.png" in w for w in proc.warnings)  # a shell shows it on stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("pretrain", "--config", str(DIGITS_TINY), "--out", str(tmp_path / "r2"),
                   "--set", f"data.source=folder:{empty}", check=False)
    assert proc.returncode == 2 and str(empty) in proc.stderr
