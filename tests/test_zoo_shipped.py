"""The shipped models are what the registry says (CI, no checkpoint needed): every file's
sha256, every artifact against its recorded outputs on its fixed input, and the held-out number
measured again from the shipped files.

The checks parametrise over the package's own registry, so they cover whatever ships. They also
run on a tiny zoo that the real build script makes from tiny runs, so they run (and can fail)
while nothing ships yet; tampered copies of that zoo show each check failing.
"""

from __future__ import annotations

import fnmatch
import json

import numpy as np
import pytest
from conftest import ROOT
from tiny_zoo import copy_zoo, tiny_zoo

from enfold.zoo.checks import ZooCheckError, check_files, check_heldout, check_recorded, check_zoo
from enfold.zoo.heldout import load_run_config, missing_data
from enfold.zoo.registry import SHIPPED_ZOO, get, list_models

SHIPPED = [m.name for m in list_models(SHIPPED_ZOO)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_match_the_registry(name):
    check_files(get(name, SHIPPED_ZOO))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_artifacts_reproduce_their_recorded_outputs(name):
    reports = check_recorded(get(name, SHIPPED_ZOO))
    assert all(r["passed"] for r in reports.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_heldout_number_matches_the_registry(name):
    model = get(name, SHIPPED_ZOO)
    why = missing_data(load_run_config(SHIPPED_ZOO / model.entry["run_config"]))
    if why:
        pytest.skip(why)
    check_heldout(model)


def test_shipped_files_are_package_data():
    """`pip install .` (not editable) installs every file the registry names: each matches a
    package-data pattern of pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["enfold.zoo"]

    def packaged(rel: str) -> bool:  # setuptools globs: one path part per pattern part
        parts = rel.split("/")
        return any(len(p.split("/")) == len(parts) and
                   all(fnmatch.fnmatch(a, b) for a, b in zip(parts, p.split("/"), strict=True))
                   for p in patterns)

    files = ["registry.json", *[rel for m in list_models(SHIPPED_ZOO) for rel in m.files]]
    assert not [f for f in files if not packaged(f)], "files outside package-data"
    assert packaged("models/sr/restorer-k1.onnx.reference.npz")
    assert not packaged("models/sr/sub/file.onnx")


def test_the_checks_pass_on_a_zoo_the_build_script_made(tiny):
    reports = check_zoo(tiny["zoo"])
    assert set(reports) == {"tiny-mask", "tiny-classifier", "tiny-encoder"}
    # the encoder ships twice: ONNX and timm weights, each against its recorded features
    assert set(reports["tiny-encoder"]["recorded"]) == {"encoder.onnx", "model.safetensors"}


def test_a_changed_file_fails_the_sha256_check(tiny, tmp_path):
    zoo = copy_zoo(tiny["zoo"], tmp_path / "zoo")
    model = get("tiny-mask", zoo)
    card = (model.folder / "README.md").read_text()
    (model.folder / "README.md").write_text(card.replace("enfold", "enf0ld", 1))  # same size
    with pytest.raises(ZooCheckError, match="README.md sha256 differs"):
        check_files(model)
    (model.folder / "README.md").write_text(card)
    check_files(model)
    (model.folder / "stray.txt").write_text("x")
    with pytest.raises(ZooCheckError, match="stray.txt"):
        check_files(model)


def test_changed_recorded_outputs_fail_validation(tiny, tmp_path):
    zoo = copy_zoo(tiny["zoo"], tmp_path / "zoo")
    model = get("tiny-classifier", zoo)
    ref = next(iter(model.references.values()))
    with np.load(ref) as data:
        fields = dict(data)
    fields["output"] = fields["output"] + 0.5
    np.savez_compressed(ref, **fields)
    with pytest.raises(ZooCheckError, match="differs from its recorded outputs"):
        check_recorded(model)


def test_a_wrong_registry_number_fails_the_heldout_check(tiny, tmp_path):
    zoo = copy_zoo(tiny["zoo"], tmp_path / "zoo")
    doc = json.loads((zoo / "registry.json").read_text())
    entry = next(e for e in doc["models"] if e["name"] == "tiny-mask")
    entry["metric"]["value"] += 0.06  # just past the 0.05 dB tolerance
    (zoo / "registry.json").write_text(json.dumps(doc))
    with pytest.raises(ZooCheckError, match="registry says"):
        check_heldout(get("tiny-mask", zoo))
    entry["metric"]["value"] -= 0.02  # 0.04 dB off: within it
    (zoo / "registry.json").write_text(json.dumps(doc))
    check_heldout(get("tiny-mask", zoo))
