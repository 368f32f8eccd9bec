"""Case 5 of the hostile-inputs issue: sidecars and artifacts that were edited after export.
The sidecar records the artifact's sha256 and loading checks it; loading compares the sidecar
with the metadata inside the artifact; ``enfold validate`` compares it with the checkpoint;
impossible values (std 0, sizes <= 0, class names that do not match the outputs) are errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from enfold.artifact.sidecar import read_sidecar, sidecar_path
from enfold.errors import EnfoldError
from enfold.runtime import load


@pytest.fixture(scope="module")
def exports(tiny_exports):
    """The session's tiny runs and their classifier exported to ONNX and TorchScript (shared:
    the tests below edit copies)."""
    arts = tiny_exports["artifacts"]
    return {**tiny_exports["runs"], "onnx": arts["classifier"],
            "torchscript": arts["classifier-ts"]}


def tampered(src: Path, dest_dir: Path, edit=None, data: bytes | None = None) -> Path:
    """A copy of artifact ``src`` in ``dest_dir`` whose sidecar went through ``edit`` (a
    function of the parsed JSON) or whose bytes are ``data``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copy(src, dest)
    meta = json.loads(sidecar_path(src).read_text())
    sidecar_path(dest).write_text(json.dumps(edit(meta) if edit else meta))
    if data is not None:
        dest.write_bytes(data)
    return dest


def test_sidecar_records_the_artifacts_sha256_and_loading_checks_it(exports, tmp_path):
    from enfold.digest import file_sha256

    for fmt in ("onnx", "torchscript"):
        art = exports[fmt]
        assert read_sidecar(art).sha256 == file_sha256(art)
        bad = tampered(art, tmp_path / fmt, data=art.read_bytes() + b"\0")
        with pytest.raises(EnfoldError, match="sha256 differs"):
            load(bad)
        unhashed = tampered(art, tmp_path / f"{fmt}-old",
                            edit=lambda m: {k: v for k, v in m.items() if k != "sha256"})
        with pytest.warns(UserWarning, match="records no sha256"):
            load(unhashed)  # exported before the hash was recorded: usable, with a warning


EDITS = {
    # name: (edit of the sidecar, text of the error)
    "mean": (lambda m: {**m, "mean": [0.9, 0.9, 0.9]}, "disagrees with the metadata inside"),
    "std-changed": (lambda m: {**m, "std": [0.1, 0.1, 0.1]}, "on std"),
    "std-zero": (lambda m: {**m, "std": [0.0, 0.0, 0.0]}, "std must be positive"),
    "img-size": (lambda m: {**m, "img_size": 16}, "on img_size"),
    "img-size-negative": (lambda m: {**m, "img_size": -4}, "img_size must be a positive"),
    "three-class-names": (lambda m: {**m, "class_names": ["a", "b", "c"]}, "class_names"),
    "renamed-classes": (lambda m: {**m, "class_names": m["class_names"][::-1]}, "class_names"),
    "no-format": (lambda m: {k: v for k, v in m.items() if k != "format"}, "missing format"),
    "no-target": (lambda m: {k: v for k, v in m.items() if k != "target"}, "missing target"),
    "a-list": (lambda m: [m], "a JSON object, not list"),
    "grid-shifts": (lambda m: {**m, "grid_shifts": 3}, "grid_shifts must be 1 or 4"),
    "step-decay": (lambda m: {**m, "step_decay": 1.5}, "step_decay must be a number in"),
    "step-decay-text": (lambda m: {**m, "step_decay": "half"}, "step_decay must be a number in"),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("case", list(EDITS))
def test_an_edited_sidecar_is_an_error_at_load(exports, tmp_path, case, fmt):
    edit, message = EDITS[case]
    with pytest.raises(EnfoldError, match=message):
        load(tampered(exports[fmt], tmp_path, edit=edit))


def test_a_sidecar_that_is_not_json_is_one_line_through_the_cli(exports, tmp_path):
    bad = tampered(exports["onnx"], tmp_path)
    sidecar_path(bad).write_text("{not json")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    proc = run_cli("predict", str(image), "--model", str(bad), "--backend", "onnxruntime",
                   check=False)
    err = proc.stderr
    assert proc.returncode == 2 and "not a readable JSON sidecar" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_validate_compares_every_result_field_with_the_checkpoint(exports, tmp_path):
    """An artifact whose sidecar and file agree, checked against a checkpoint whose
    normalisation differs: validation fails naming the fields, whatever the outputs."""
    from enfold.export.validate import ValidationError, validate_artifact

    state = torch.load(exports["finetune"], weights_only=True)
    state["config"]["data"]["mean"] = [0.25, 0.25, 0.25]
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ValidationError, match=r"on mean.*checkpoint_sha256|mean, .*sha256"):
        validate_artifact(exports["onnx"], str(other), batches=(1,))
    report = validate_artifact(exports["onnx"], str(exports["finetune"]), batches=(1,))
    assert report["passed"]


def test_case7_damaged_onnx_and_torchscript_files_are_one_line_errors(exports, tmp_path):
    """Truncated, random and empty .onnx files and a torch zip renamed .ts, each with a
    sidecar whose sha256 matches it (so the loader itself meets the damage): one line, exit 2,
    for predict and serve."""
    from PIL import Image

    from enfold.digest import file_sha256

    image = tmp_path / "n.png"
    Image.new("RGB", (8, 8)).save(image)
    good = exports["onnx"].read_bytes()
    sidecar = read_sidecar(exports["onnx"]).to_dict()
    damaged = {"truncated.onnx": good[: len(good) // 2], "random.onnx": bytes(range(256)) * 16,
               "empty.onnx": b"", "model.ts": Path(exports["pretrain"]).read_bytes()}
    for name, data in damaged.items():
        bad = tmp_path / name
        bad.write_bytes(data)
        fmt = "torchscript" if name.endswith(".ts") else "onnx"
        sidecar_path(bad).write_text(json.dumps({**sidecar, "format": fmt,
                                                 "sha256": file_sha256(bad)}))
        backend = "torchscript" if fmt == "torchscript" else "onnxruntime"
        for command in (["predict", str(image)], ["serve", "--port", "0"]):
            # a named backend: "auto" lists every backend it tried, one line each
            proc = run_cli(*command, "--model", str(bad), "--backend", backend, check=False)
            code, err = proc.returncode, proc.stderr
            assert code == 2, err
            assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
            assert str(bad) in err and "Traceback" not in err
