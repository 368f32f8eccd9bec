"""benchmarks/retrain.py on a tiny digits encoder: a "shipped" zoo built from one run, the same
commands run again under another root (a real `enfold` subprocess) and compared; a finished run
is read back, not retrained; a root holding another seed's run is refused; unknown names and a
model the zoo does not ship are clear errors before any training."""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import DIGITS_TINY, ROOT, run_cli
from tiny_zoo import TINY_RUN, build_zoo

from enfold.errors import EnfoldError

sys.path.insert(0, str(ROOT / "benchmarks"))
import retrain  # noqa: E402

RUN = "runs/tiny/pre"
TRAIN = (f"enfold pretrain --config {DIGITS_TINY} --out {RUN} --no-compile "
         + " ".join(f"--set {s}" for s in TINY_RUN))
SPEC = build_zoo.ModelSpec("tiny-encoder", "features", "encoder", RUN, str(DIGITS_TINY),
                           (TRAIN,), "digit features", try_fp16=False,
                           metric_args={"count": 200, "bank_per_class": 20})


def in_process(command, root):
    """A runner that runs the command through the CLI in this process, in the root (the
    tests' own runs skip a fresh interpreter's imports; one test runs the real subprocess)."""
    here = os.getcwd()
    os.chdir(root)
    try:
        assert run_cli(*command.argv).returncode == 0
    finally:
        os.chdir(here)


def no_training(command, root):
    raise AssertionError(f"trained {command.text} although its run is finished")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A zoo shipping the tiny encoder, built from a run trained by the spec's command."""
    root = tmp_path_factory.mktemp("shipped")
    retrain.train_runs([SPEC], root, None, runner=in_process)
    build_zoo.build([SPEC], root / "zoo", runs_root=root, log=lambda _: None)
    return root


def test_a_retrain_is_compared_with_the_shipped_model(shipped, tmp_path, monkeypatch):
    root = tmp_path / "retrain"
    (row,) = retrain.retrain([SPEC], root, zoo=shipped / "zoo", shipped_runs=shipped,
                             log=lambda _: None)  # trained by a real `enfold` subprocess
    entry = json.loads((root / "zoo" / "registry.json").read_text())["models"][0]
    shipped_entry = json.loads((shipped / "zoo" / "registry.json").read_text())["models"][0]
    assert (root / RUN / "checkpoint-last.pt").is_file()
    # the numbers are measured: the retrain's from its own build, the shipped one again now
    assert row["retrain"] == entry["metric"]["fp32_value"]
    assert row["shipped"] == pytest.approx(shipped_entry["metric"]["value"], abs=1e-9)
    assert row["difference"] == row["retrain"] - row["shipped"]
    assert row["within"] == (abs(row["difference"]) <= 0.2) and row["unit"] == "%"
    assert row["seed"] == 0 and "same seed" in row["seed_from"]
    assert row["minutes"] > 0 and not row["read_back"]
    match = row["checkpoint"]
    assert match["sha256"] == entry["checkpoint_sha256"]
    assert match["identical"] == (match["sha256"] == shipped_entry["checkpoint_sha256"])
    assert match["weights_identical"] is not None  # the shipped run is here to compare
    text = retrain.table([row])
    assert "`tiny-encoder`" in text and f"{row['retrain']:.2f} %" in text

    # run again through main: the finished run is read back, and the doc section written
    monkeypatch.setattr(build_zoo, "SHIPPED", (SPEC,))
    monkeypatch.setattr(retrain, "run_command", no_training)
    results = tmp_path / "RESULTS.md"
    assert retrain.main(["--root", str(root), "--zoo", str(shipped / "zoo"),
                         "--shipped-runs", str(shipped), "--results", str(results)]) == 0
    doc = json.loads((root / retrain.REPORT).read_text())
    again = doc["rows"]["tiny-encoder@seed0"]
    assert again["read_back"] and again["minutes"] == pytest.approx(row["minutes"])
    assert again["command"].startswith("python benchmarks/retrain.py --root ")
    section = results.read_text()
    assert "<!-- retrain:start -->" in section and "`tiny-encoder`" in section
    assert again["command"] in section and "CPU threads" in section

    # another seed in a root holding seed 0's run: refused, the run kept
    before = (root / RUN / "checkpoint-last.pt").read_bytes()
    with pytest.raises(EnfoldError, match="another config.*train.seed"):
        retrain.train_runs([SPEC], root, 1, runner=no_training)
    assert (root / RUN / "checkpoint-last.pt").read_bytes() == before


def test_a_seed_run_records_its_seed(shipped, tmp_path):
    root = tmp_path / "seed1"
    (row,) = retrain.retrain([SPEC], root, seed=1, zoo=shipped / "zoo", shipped_runs=shipped,
                             log=lambda _: None, runner=in_process)
    assert row["seed"] == 1 and "seed-to-seed" in row["seed_from"]
    from enfold.checkpoint.store import load_checkpoint

    ckpt = root / "seed1" / RUN / "checkpoint-last.pt"  # beside the same-seed runs, not over
    assert load_checkpoint(ckpt)["config"]["train"]["seed"] == 1
    assert not (root / RUN).exists()
    assert not row["checkpoint"]["identical"] and row["checkpoint"]["weights_identical"] is False


def test_unknown_names_and_unshipped_models_are_errors_before_any_training(
        shipped, tmp_path, capsys):
    with pytest.raises(EnfoldError, match="unknown --only nope; names: .*fmnist-encoder"):
        retrain.select("fmnist-encoder,nope", list(build_zoo.SHIPPED))
    assert retrain.main(["--only", "srr", "--no-doc", "--root", str(tmp_path / "r")]) == 2
    assert "unknown --only srr" in capsys.readouterr().err
    other = build_zoo.ModelSpec("tiny-other", "mask", "restorer", RUN, str(DIGITS_TINY),
                                (TRAIN,), "not shipped")
    root = tmp_path / "none"
    with pytest.raises(EnfoldError, match="ships no tiny-other.*it ships: tiny-encoder"):
        retrain.retrain([other], root, zoo=shipped / "zoo", runner=no_training)
    assert not root.exists()
    bad = build_zoo.ModelSpec("tiny-encoder", "features", "encoder", RUN, str(DIGITS_TINY),
                              (f"enfold pretrain --config {DIGITS_TINY} --out /abs/run",), "x")
    with pytest.raises(EnfoldError, match="--out must be a path relative"):
        retrain.retrain([bad], root, zoo=shipped / "zoo", runner=no_training)
