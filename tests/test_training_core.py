"""The shared training core: checkpoints, resume after SIGKILL, non-finite loss, schedules."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DIGITS_TINY, ROOT, TINY, cli_env, run_cli, set_args
from torch import nn

from enfold.checkpoint.store import load_checkpoint, save_checkpoint
from enfold.config import load_config
from enfold.data import StreamSampler
from enfold.errors import ConfigError, EnfoldError, NonFiniteLossError
from enfold.pipeline.distributed import DistInfo
from enfold.pipeline.schedule import lr_at, scaled_lr
from enfold.pipeline.trainer import StageParts, fit


class Ramp(torch.utils.data.Dataset):
    """A dataset addressed like the real ones: ``(epoch, index) -> (x,)``."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, key):
        _, index = key
        return (torch.full((3,), float(index)),)


class Exploding(nn.Module):
    """A toy model whose loss turns NaN from forward call ``bad_call`` on."""

    def __init__(self, bad_call: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls, self.bad_call = 0, bad_call

    def forward(self, x):
        self.calls += 1
        loss = ((self.w * x) ** 2).mean() * 1e-3
        if self.calls >= self.bad_call:
            loss = loss * float("nan")
        return loss, {}


def toy_parts(model: nn.Module) -> StageParts:
    def loader(ds, start):
        sampler = StreamSampler(len(ds), 1, 0, seed=0, start_sample=start)
        return torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler)

    return StageParts(stage="toy", model=model, train_dataset=Ramp(), build_loader=loader)


def test_lr_schedule_warms_up_then_decays_to_floor():
    assert scaled_lr(1.5e-4, 4096, 256) == pytest.approx(2.4e-3)
    peak, total = 1.0, 100
    assert lr_at(0, peak, total, warmup=10) == pytest.approx(0.1)
    assert lr_at(9, peak, total, warmup=10) == pytest.approx(1.0)
    assert lr_at(55, peak, total, warmup=10) == pytest.approx(0.5)
    assert lr_at(100, peak, total, warmup=10, floor=0.01) == pytest.approx(0.01)


def test_checkpoint_is_plain_data_and_atomic(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {"a": 1}, "step": 3})
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
    # something that is not plain data is refused when loading (weights_only)
    torch.save({"model": {}, "config": {}, "obj": load_config()}, tmp_path / "bad.pt")
    with pytest.raises(EnfoldError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EnfoldError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_non_finite_loss_stops_with_message_and_leaves_last_checkpoint_intact(tmp_path):
    cfg = load_config(None, ["train.compile=false", "train.max_steps=20", "train.ckpt_every=5",
                             "train.warmup_steps=0", "data.batch_size=4", "eval.every=0",
                             "train.log_every=1"])
    model = Exploding(bad_call=8)  # steps 1..7 fine, the 8th is NaN
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) .* step 7") as info:
        fit(cfg, toy_parts(model), tmp_path, DistInfo())
    assert "checkpoint-last.pt" in str(info.value)
    state = load_checkpoint(tmp_path / "checkpoint-last.pt")
    assert state["step"] == 5
    assert torch.isfinite(state["model"]["w"]).all()
    assert torch.isfinite(model.w).all()  # the NaN step never reached the weights
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()]
    assert max(logged) == 7


def test_resume_flag_without_checkpoint_is_an_error(tmp_path):
    cfg = load_config(None, ["train.compile=false", "train.max_steps=2", "data.batch_size=4",
                             "eval.every=0"])
    with pytest.raises(EnfoldError, match="--resume given but .* does not exist"):
        fit(cfg, toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo(), resume=True)


def test_resume_with_other_settings_is_an_error_but_more_steps_are_fine(tmp_path):
    base = ["train.compile=false", "train.max_steps=2", "data.batch_size=4", "eval.every=0",
            "train.ckpt_every=1"]
    fit(load_config(None, base), toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())
    other = load_config(None, [*base, "corrupt.tasks=[mask, noise]", "train.seed=3"])
    with pytest.raises(EnfoldError, match=r"different corrupt.tasks, train.seed; .* new --out"):
        fit(other, toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())
    longer = load_config(None, [*base[:1], "train.max_steps=4", *base[2:]])
    fit(longer, toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())
    assert load_checkpoint(tmp_path / "checkpoint-last.pt")["step"] == 4


def test_keep_steps_keeps_a_whole_checkpoint_of_each_listed_step(tmp_path):
    cfg = load_config(None, ["train.compile=false", "train.max_steps=5", "data.batch_size=4",
                             "eval.every=0", "train.ckpt_every=100", "train.keep_steps=[2, 4]"])
    fit(cfg, toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())
    kept = sorted(p.name for p in tmp_path.glob("checkpoint-step*.pt"))
    assert kept == ["checkpoint-step2.pt", "checkpoint-step4.pt"]
    assert [load_checkpoint(tmp_path / k)["step"] for k in kept] == [2, 4]
    assert load_checkpoint(tmp_path / "checkpoint-last.pt")["step"] == 5
    snap, last = load_checkpoint(tmp_path / kept[0]), load_checkpoint(tmp_path / kept[1])
    assert not all(torch.equal(snap["model"][k], last["model"][k]) for k in snap["model"])


def test_stop_after_pauses_a_run_on_its_long_schedule_and_resume_continues_it(tmp_path):
    base = ["train.compile=false", "train.max_steps=6", "data.batch_size=4", "eval.every=0",
            "train.ckpt_every=100", "train.warmup_steps=0"]
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    fit(load_config(None, base), toy_parts(Exploding(bad_call=99)), straight, DistInfo())
    fit(load_config(None, [*base, "train.stop_after=3"]), toy_parts(Exploding(bad_call=99)),
        paused, DistInfo())
    assert load_checkpoint(paused / "checkpoint-last.pt")["step"] == 3
    fit(load_config(None, base), toy_parts(Exploding(bad_call=99)), paused, DistInfo())
    a, b = (load_checkpoint(d / "checkpoint-last.pt")["model"] for d in (straight, paused))
    assert all(torch.allclose(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="keep_steps must lie in 1..train.max_steps=6"):
        fit(load_config(None, [*base, "train.keep_steps=[7]"]), toy_parts(Exploding(99)),
            tmp_path / "bad", DistInfo())


def test_resume_reads_a_field_added_since_the_checkpoint_as_its_default(tmp_path):
    base = ["train.compile=false", "train.max_steps=2", "data.batch_size=4", "eval.every=0",
            "train.ckpt_every=1"]
    fit(load_config(None, base), toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())
    path = tmp_path / "checkpoint-last.pt"
    state = load_checkpoint(path)
    del state["config"]["model"]["fill_holes"]  # as written before the field existed
    save_checkpoint(path, state)
    fit(load_config(None, [*base[:1], "train.max_steps=3", *base[2:]]),
        toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())
    assert load_checkpoint(path)["step"] == 3
    state = load_checkpoint(path)
    state["config"]["model"]["fill_holes"] = 8  # but a real difference is still refused
    save_checkpoint(path, state)
    with pytest.raises(EnfoldError, match="different model.fill_holes"):
        fit(load_config(None, [*base[:1], "train.max_steps=4", *base[2:]]),
            toy_parts(Exploding(bad_call=99)), tmp_path, DistInfo())


def _pretrain_args(out) -> list[str]:
    overrides = [*TINY, "train.max_steps=60", "train.ckpt_every=5", "train.log_every=1",
                 "eval.every=1000"]
    return ["pretrain", "--config", str(DIGITS_TINY), "--out", str(out), "--no-compile",
            *set_args(overrides)]


def _one_thread_cli(*args: str):
    """``run_cli`` on one thread, as the killed subprocess runs (OMP_NUM_THREADS=1), so the
    weights compare to the last bit that thread counts can change."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_cli(*args)
    finally:
        torch.set_num_threads(threads)


def _final_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint-last.pt")["model"]


def _logged_step(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])["step"] if lines else 0
    except json.JSONDecodeError:  # a line being written
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_ends_with_the_same_weights(tmp_path):
    # the killed run is a real process (SIGKILL is the subject); the straight run and the
    # resume run in this process
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _one_thread_cli(*_pretrain_args(straight))

    proc = subprocess.Popen([sys.executable, "-m", "enfold.cli.app", *_pretrain_args(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**cli_env(), "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    deadline = time.time() + 300
    while _logged_step(killed) < 23 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    stopped_at = load_checkpoint(killed / "checkpoint-last.pt")["step"]
    assert 0 < stopped_at < 60

    resumed = _one_thread_cli(*_pretrain_args(killed))
    assert f"resuming from {killed / 'checkpoint-last.pt'} at step {stopped_at}" in resumed.stdout
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    records = [json.loads(line) for line in (killed / "metrics.jsonl").open()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 61))  # each step logged once, the replayed ones not twice
