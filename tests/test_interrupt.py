"""Ctrl-C during training: the run stops with exit code 130 and says what is left to resume from
(Typer would otherwise turn the interrupt into a silent exit 130). A real ``enfold pretrain`` in
a subprocess, interrupted with SIGINT once it trains."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from conftest import DIGITS_TINY, ROOT, TINY, cli_env, set_args


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_pretrain_prints_the_interrupted_message_and_exits_130(tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(DIGITS_TINY), "--out", str(out), "--no-compile",
            *set_args([*TINY, "train.max_steps=100000", "train.ckpt_every=5",
                       "train.log_every=1", "eval.every=0"])]
    # A child inherits an ignored SIGINT (POSIX keeps SIG_IGN across exec), and Python then
    # installs no KeyboardInterrupt handler: start it with the default disposition, as a
    # terminal's foreground process has, whatever an earlier test left in this process.
    proc = subprocess.Popen([sys.executable, "-m", "enfold.cli.app", *args], cwd=ROOT,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint-last.pt").exists():  # training, and one checkpoint saved
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == (f"interrupted; {out / 'checkpoint-last.pt'} is intact: rerun the same "
                         "command to resume"), err
    assert "Traceback" not in err
