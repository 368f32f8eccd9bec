"""A checkpoint opened once: a runtime session over a checkpoint, and an export from one, read
it with torch.load once and hash it once, however many targets, references and cards use it."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import enfold.digest


@pytest.fixture
def reads(monkeypatch) -> tuple[Counter, Counter]:
    """``(loads, hashes)``: torch.load and file_sha256 calls, counted by resolved path."""
    loads: Counter = Counter()
    hashes: Counter = Counter()
    real_load, real_hash = torch.load, enfold.digest.file_sha256

    def counted_load(f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            loads[Path(f).resolve()] += 1
        return real_load(f, *args, **kwargs)

    def counted_hash(path):
        hashes[Path(path).resolve()] += 1
        return real_hash(path)

    monkeypatch.setattr(torch, "load", counted_load)
    # every module that bound the name at import, and the ones importing it later
    for module in list(sys.modules.values()):
        if (getattr(module, "__name__", "").startswith("enfold")
                and getattr(module, "file_sha256", None) is real_hash):
            monkeypatch.setattr(module, "file_sha256", counted_hash)
    return loads, hashes


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_a_checkpoint_session_reads_and_hashes_it_once(tiny_runs, reads, stage):
    import enfold.runtime

    loads, hashes = reads
    ckpt = Path(tiny_runs[stage]).resolve()
    session = enfold.runtime.load(ckpt, backend="torch", device="cpu")
    assert len(session.targets) >= 2  # several targets, one read
    assert loads[ckpt] == 1, f"torch.load of the checkpoint {loads[ckpt]} times"
    assert hashes[ckpt] == 1, f"the checkpoint hashed {hashes[ckpt]} times"
    assert session.metadata.checkpoint_sha256 == enfold.digest.file_sha256(ckpt)


def test_an_export_reads_and_hashes_its_checkpoint_once(tiny_runs, reads, tmp_path):
    """Trace, sidecar, validation against PyTorch (reference and held-out data) and the model
    card all use the one opened checkpoint."""
    from enfold.export.export import export_artifact

    loads, hashes = reads
    ckpt = Path(tiny_runs["pretrain"]).resolve()
    result = export_artifact(str(ckpt), "energy", "torchscript", tmp_path, batch="2",
                             validate=True)
    assert result["validation"]["passed"]
    assert (tmp_path / "README.md").is_file()
    assert loads[ckpt] == 1, f"torch.load of the checkpoint {loads[ckpt]} times"
    assert hashes[ckpt] == 1, f"the checkpoint hashed {hashes[ckpt]} times"


def test_the_counter_sees_a_second_read(tiny_runs, reads):
    """The counts can fail: two sessions over one checkpoint read it twice."""
    import enfold.runtime

    loads, hashes = reads
    ckpt = Path(tiny_runs["pretrain"]).resolve()
    for _ in range(2):
        enfold.runtime.load(ckpt, backend="torch", device="cpu")
    assert loads[ckpt] == 2 and hashes[ckpt] == 2
