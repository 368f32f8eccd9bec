"""Hostile inputs, round 2, on the file side: outputs never replace an input (hard link or
symlink), never write through a link, never replace an existing file without --overwrite; a FIFO
among the inputs is skipped unopened; an output name taken by a folder is that file's error; two
training runs never share a run folder. The CLI's own entry point, the tiny models of
test_hostile."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_TINY, TINY, set_args
from test_hostile import NORMAL, assert_one_line_error, cli, runs  # noqa: F401 (runs: fixture)
from tiny_runs import FINETUNE_TINY

from enfold.runtime.images import encode_png

OTHER = encode_png(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(7)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def restore(monkeypatch, capsys, runs, *args: str) -> tuple[int, str]:  # noqa: F811
    return cli(monkeypatch, capsys, "restore", *args, "--model", str(runs["pretrain"]))


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.png").write_bytes(NORMAL)
    return folder


# ----------------------------------------------------------------------------- hard links


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_hard_link_to_an_input_in_out_is_never_written(runs, inputs, tmp_path,  # noqa: F811
                                                         monkeypatch, capsys, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    os.link(inputs / "x.png", out / "x.png")  # the same file under an output's name
    before = sha(inputs / "x.png")
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out),
                        *(["--overwrite"] if overwrite else []))
    assert code == 0, err
    assert sha(inputs / "x.png") == before and sha(out / "x.png") == before
    report = json.loads((out / "restore.json").read_text())["results"]
    assert [Path(r["restored"]).name for r in report] == ["x-2.png"]


def test_write_output_never_replaces_an_input_name(tmp_path):
    from enfold.errors import OutputWriteError
    from enfold.output_files import entry_identity, write_output

    (tmp_path / "a.png").write_bytes(NORMAL)
    spelled_otherwise = tmp_path / "sub" / ".." / "a.png"
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputWriteError, match="one of the inputs"):
        write_output(spelled_otherwise, b"new", [entry_identity(tmp_path / "a.png")])
    assert (tmp_path / "a.png").read_bytes() == NORMAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "sub"]  # no temp left


# ----------------------------------------------------------------------------- symlinks


def test_symlinks_named_like_outputs_never_write_through(runs, inputs, tmp_path,  # noqa: F811
                                                         monkeypatch, capsys):
    out, victims = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    victims.mkdir()
    names = ("x.png", "x-panel.png", "restore.json")
    for name in names:
        (victims / name).write_text(f"precious {name}")
        (out / name).symlink_to(victims / name)
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out))
    assert_one_line_error(code, err, "already exist", "--overwrite", str(out / "x.png"),
                          str(out / "restore.json"))
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out),
                        "--overwrite")
    assert code == 0, err
    for name in names:  # the links themselves were replaced, their targets kept
        assert (victims / name).read_text() == f"precious {name}"
        assert not (out / name).is_symlink() and (out / name).is_file()
    assert (out / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


def test_a_dangling_symlink_counts_as_an_existing_output(runs, inputs, tmp_path,  # noqa: F811
                                                         monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x-panel.png").symlink_to(tmp_path / "not-yet" / "created.png")
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out))
    assert_one_line_error(code, err, "x-panel.png", "--overwrite")
    assert not (tmp_path / "not-yet").exists()


# ----------------------------------------------------------------------------- existing files


def test_existing_outputs_are_refused_before_any_work_without_overwrite(
        runs, inputs, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").write_bytes(b"an older result")
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out))
    assert_one_line_error(code, err, "1 output file(s) already exist", str(out / "x.png"),
                          "pass --overwrite or choose another --out")
    assert (out / "x.png").read_bytes() == b"an older result"
    assert sorted(p.name for p in out.iterdir()) == ["x.png"]  # nothing else written
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out),
                        "--overwrite")
    assert code == 0, err
    assert (out / "x.png").read_bytes() != b"an older result"


def test_every_command_writing_into_out_refuses_existing_outputs(runs, tmp_path,  # noqa: F811
                                                                 monkeypatch, capsys):
    ckpt, ft = str(runs["pretrain"]), str(runs["finetune"])
    old = b"an older result"
    taken = {"visualize": tmp_path / "grid.png", "bench": tmp_path / "b.json",
             "evaluate": tmp_path / "ev" / "eval.json", "export": tmp_path / "ex" / "energy.ts",
             "export-sidecar": tmp_path / "ex2" / "energy.ts.json"}
    commands = {
        "visualize": ["visualize", "--checkpoint", ckpt, "--task", "mask", "--out",
                      str(taken["visualize"])],
        "bench": ["bench", "--model", ckpt, "--out", str(taken["bench"])],
        "evaluate": ["evaluate", "--checkpoint", ft, "--out", str(tmp_path / "ev")],
        "export": ["export", "--checkpoint", ckpt, "--target", "energy", "--format",
                   "torchscript", "--no-validate", "--out", str(tmp_path / "ex")],
        "export-sidecar": ["export", "--checkpoint", ckpt, "--target", "energy", "--format",
                           "torchscript", "--no-validate", "--out", str(tmp_path / "ex2")],
    }
    for name, args in commands.items():
        taken[name].parent.mkdir(exist_ok=True)
        taken[name].write_bytes(old)
        start = time.perf_counter()
        code, err = cli(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, str(taken[name]), "--overwrite")
        assert time.perf_counter() - start < 10, name
        assert taken[name].read_bytes() == old, name
    # with --overwrite the visualization replaces its file (a quick one to run)
    code, err = cli(monkeypatch, capsys, *commands["visualize"], "--num", "2", "--overwrite")
    assert code == 0, err
    assert taken["visualize"].read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- FIFOs


def _unblocker(fifo: Path, after: float) -> tuple[threading.Timer, list[bool]]:
    """A timer that, if a reader is stuck opening ``fifo``, opens it for writing (so the test
    ends instead of hanging) and records that it had to."""
    fired: list[bool] = []

    def unblock() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO when nobody reads
        except OSError:
            return
        fired.append(True)
        os.close(fd)

    timer = threading.Timer(after, unblock)
    timer.start()
    return timer, fired


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_the_inputs_is_skipped_unopened(runs, inputs, tmp_path,  # noqa: F811
                                                     monkeypatch, capsys):
    fifo = inputs / "pipe.png"
    os.mkfifo(fifo)
    timer, fired = _unblocker(fifo, 20.0)
    try:
        code, err = cli(monkeypatch, capsys, "predict", str(inputs), "--model",
                        str(runs["finetune"]))
        assert not fired, "predict opened the FIFO and blocked"
        assert code == 1 and f"skipped {fifo}: " in err and "not a regular file" in err, err
        code, err = cli(monkeypatch, capsys, "predict", str(fifo), "--model",
                        str(runs["finetune"]))
        assert code == 1 and "not a regular file" in err and "does not exist" not in err, err
        out = tmp_path / "out"
        code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out))
        assert not fired, "restore opened the FIFO and blocked"
        assert code == 1 and "not a regular file" in err, err
        report = json.loads((out / "restore.json").read_text())
        assert [Path(r["file"]).name for r in report["results"]] == ["x.png"]
        assert "not a regular file" in report["errors"][str(fifo)]
    finally:
        timer.cancel()


# ----------------------------------------------------------------------------- a folder in the way


def test_an_output_name_taken_by_a_folder_is_that_files_error(runs, inputs, tmp_path,  # noqa: F811
                                                              monkeypatch, capsys):
    (inputs / "y.png").write_bytes(OTHER)
    out = tmp_path / "out"
    (out / "x.png").mkdir(parents=True)  # the first file's output name is a folder
    code, err = restore(monkeypatch, capsys, runs, str(inputs), "--out", str(out))
    assert code == 1, err
    assert "Traceback" not in err and "a folder has that name" in err
    report = json.loads((out / "restore.json").read_text())
    assert [Path(r["file"]).name for r in report["results"]] == ["y.png"]
    assert "a folder has that name" in report["errors"][str(inputs / "x.png")]
    assert (out / "y.png").is_file() and (out / "x.png").is_dir()


# ----------------------------------------------------------------------------- one run per folder


def test_a_second_training_run_on_one_out_fails_at_once_naming_the_holder(
        runs, tmp_path, monkeypatch, capsys):  # noqa: F811
    from enfold.pipeline.run_lock import run_lock

    out = tmp_path / "run"
    tiny = set_args([*TINY, "train.compile=false", "train.max_steps=2"])
    commands = {"pretrain": ["pretrain", "--config", str(DIGITS_TINY), "--out", str(out), *tiny],
                "finetune": ["finetune", "--config", str(FINETUNE_TINY), "--out", str(out),
                             *tiny]}
    with run_lock(out):  # another run holds the folder
        for args in commands.values():
            start = time.perf_counter()
            code, err = cli(monkeypatch, capsys, *args)
            assert_one_line_error(code, err, "in use by another training run",
                                  f"pid {os.getpid()}", str(out / ".lock"))
            assert time.perf_counter() - start < 10
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of theirs written
    with run_lock(out):  # released with its holder: the folder can be locked again
        pass
