"""The typed sidecar (enfold.artifact.sidecar.Sidecar): read, checked and written in one place;
an unknown or missing field is an error naming it and the file; every shipped sidecar reads and
writes back exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from enfold.artifact.sidecar import FIELDS, Sidecar, sidecar_path
from enfold.errors import EnfoldError, SidecarError

MODELS = Path(__file__).resolve().parents[1] / "enfold" / "zoo" / "models"
SHIPPED = sorted(p for p in MODELS.glob("*/*.json")
                 if p.with_name(p.name[: -len(".json")]).suffix in (".onnx", ".ts", ".engine"))
GOOD = {"format": "onnx", "target": "restorer", "img_size": 8, "in_chans": 1, "mean": [0.5],
        "std": [0.25], "steps": 2, "step_sizes": [0.1, 0.2], "task": "mask", "tasks": ["mask"],
        "corrupt": {"mask": {"ratio": 0.5}}, "restorer_inputs": ["mask"]}


def _write(tmp_path: Path, meta: dict) -> Path:
    artifact = tmp_path / "restorer.onnx"
    artifact.write_bytes(b"onnx bytes")
    sidecar_path(artifact).write_text(json.dumps(meta))
    return artifact


def test_there_are_shipped_sidecars_to_check():
    assert len(SHIPPED) >= 8  # one per shipped model


@pytest.mark.parametrize("side", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_sidecar_round_trips_exactly(side, tmp_path):
    raw = json.loads(side.read_text())
    artifact = side.with_name(side.name[: -len(".json")])
    meta = Sidecar.read(artifact)
    assert meta.to_dict() == raw
    assert Sidecar.from_dict(meta.to_dict()) == meta
    # written and read again: the same fields (the sha256 is of the file written beside)
    copy = tmp_path / artifact.name
    copy.write_bytes(artifact.read_bytes())
    meta.write(copy)
    assert json.loads(sidecar_path(copy).read_text()) == raw
    assert Sidecar.read(copy) == meta


def test_an_unknown_field_is_an_error_naming_it_and_the_file(tmp_path):
    artifact = _write(tmp_path, {**GOOD, "stepz": 3, "colour": "red"})
    with pytest.raises(SidecarError, match=r"restorer\.onnx\.json: unknown fields colour, stepz"):
        Sidecar.read(artifact)
    assert issubclass(SidecarError, EnfoldError)  # the CLI prints it as one line, exit code 2


@pytest.mark.parametrize("field", ["format", "target", "img_size", "in_chans", "mean", "std"])
def test_a_missing_field_is_an_error_naming_it_and_the_file(tmp_path, field):
    artifact = _write(tmp_path, {k: v for k, v in GOOD.items() if k != field})
    with pytest.raises(SidecarError, match=rf"restorer\.onnx\.json: missing {field} "):
        Sidecar.read(artifact)


def test_optional_fields_absent_from_older_sidecars_default_to_none(tmp_path):
    old = {k: GOOD[k] for k in ("format", "target", "img_size", "in_chans", "mean", "std",
                                "steps")}
    meta = Sidecar.read(_write(tmp_path, old))
    assert meta.precision is None and meta.sha256 is None and meta.restorer_inputs is None
    assert meta.to_dict() == old


def test_values_are_typed_and_frozen():
    meta = Sidecar.from_dict(GOOD)
    assert meta.mean == (0.5,) and meta.restorer_inputs == ("mask",) and meta.steps == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.steps = 3  # type: ignore[misc]
    assert meta.to_dict() == GOOD
    assert set(GOOD) <= FIELDS


@pytest.mark.parametrize("edit, message", [
    ({"img_size": 0}, "img_size must be a positive integer"),
    ({"std": [0.0]}, "std must be positive"),
    ({"format": "pickle"}, "unknown format 'pickle'"),
    ({"step_sizes": [0.1]}, "step_sizes must list 2 finite numbers"),
    ({"tasks": "mask"}, "tasks must be a list"),
])
def test_impossible_values_are_errors(edit, message):
    with pytest.raises(SidecarError, match=message):
        Sidecar.from_dict({**GOOD, **edit}, "x.json")


def test_not_an_object_and_not_json_are_errors(tmp_path):
    with pytest.raises(SidecarError, match="a sidecar is a JSON object, not list"):
        Sidecar.from_dict([GOOD], "x.json")
    artifact = _write(tmp_path, GOOD)
    sidecar_path(artifact).write_text("{not json")
    with pytest.raises(SidecarError, match="not a readable JSON sidecar"):
        Sidecar.read(artifact)
    sidecar_path(artifact).unlink()
    with pytest.raises(SidecarError, match="not found"):
        Sidecar.read(artifact)
