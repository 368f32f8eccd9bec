"""The zoo's registry: names, did-you-mean, a path still wins, `enfold restore --task` without
--model, `enfold.runtime.load(name)`, `enfold validate NAME` and `enfold models`; on the tiny
zoo the build script makes (ENFOLD_ZOO points every caller at it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_zoo import tiny_zoo
from typer.testing import CliRunner

import enfold.runtime
import enfold.zoo
from enfold.cli.app import app
from enfold.errors import EnfoldError
from enfold.zoo import ZOO_ENV, UnknownModelError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


@pytest.fixture
def zoo(tiny, monkeypatch):
    monkeypatch.setenv(ZOO_ENV, str(tiny["zoo"]))
    return tiny["zoo"]


def invoke(*args: str):
    """The CLI in this process, with EnfoldError left to the test (main() prints it)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def test_names_and_entries(zoo):
    assert enfold.zoo.names() == ["tiny-mask", "tiny-classifier", "tiny-encoder"]
    mask = enfold.zoo.get("tiny-mask")
    assert mask.task == "mask" and mask.target == "restorer" and mask.artifact.is_file()
    assert (mask.img_size, mask.in_chans) == (8, 3)
    assert mask.metric["unit"] == "dB" and "digits held-out" in mask.metric["dataset"]
    assert enfold.zoo.for_task("classify").name == "tiny-classifier"


def test_unknown_name_says_did_you_mean(zoo):
    with pytest.raises(UnknownModelError, match="did you mean tiny-mask"):
        enfold.zoo.get("tiny-mask2")
    with pytest.raises(UnknownModelError, match="did you mean tiny-classifier.*shipped models: "
                                                "tiny-mask, tiny-classifier, tiny-encoder"):
        enfold.zoo.resolve("tiny-clasifier")
    with pytest.raises(UnknownModelError, match="no model ships for task 'sr'.*shipped tasks: "
                                                "classify, features, mask"):
        enfold.zoo.for_task("sr")


def test_resolve_prefers_an_existing_path(zoo, tmp_path, monkeypatch):
    assert enfold.zoo.resolve("tiny-mask") == enfold.zoo.get("tiny-mask").artifact
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-mask").write_text("a file of that name")
    assert enfold.zoo.resolve("tiny-mask").resolve() == tmp_path / "tiny-mask"
    with pytest.raises(UnknownModelError, match="missing.onnx does not exist"):
        enfold.zoo.resolve("missing.onnx")


def test_runtime_load_takes_a_name(zoo):
    session = enfold.runtime.load("tiny-classifier")
    assert session.metadata.target == "classifier" and session.metadata.precision == "fp16"
    probs = session.classify(np.full((2, 3, 8, 8), 0.5, np.float32))
    assert probs.shape == (2, 10)
    by_path = enfold.runtime.load(enfold.zoo.get("tiny-classifier").artifact)
    np.testing.assert_array_equal(by_path.classify(np.zeros((1, 3, 8, 8), np.float32)),
                                  session.classify(np.zeros((1, 3, 8, 8), np.float32)))
    with pytest.raises(EnfoldError, match="neither a file nor a shipped model"):
        enfold.runtime.load("no-such-model")


def test_no_models_shipped_is_said(tmp_path, monkeypatch):
    (tmp_path / "registry.json").write_text(json.dumps({"version": 1, "models": []}))
    monkeypatch.setenv(ZOO_ENV, str(tmp_path))
    assert enfold.zoo.list_models() == []
    with pytest.raises(UnknownModelError, match="no models ship with this install yet"):
        enfold.zoo.resolve("sr")
    assert "no models ship" in invoke("models").output
    monkeypatch.setenv(ZOO_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(EnfoldError, match="holds no registry.json"):
        enfold.zoo.list_models()


def test_restore_task_without_model_uses_the_shipped_one(zoo, tmp_path):
    from PIL import Image

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
                    ).save(img)
    result = invoke("restore", str(img), "--task", "mask", "--simulate", "--out",
                    str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "in.png").is_file()
    report = json.loads((tmp_path / "out" / "restore.json").read_text())
    assert report["results"][0]["task"] == "mask" and "psnr_restored" in report["results"][0]
    # no restorer ships for sr: a clear error, nothing written
    result = invoke("restore", str(img), "--task", "sr", "--out", str(tmp_path / "out2"))
    assert result.exit_code != 0 and "no model ships for task 'sr'" in str(result.exception)
    result = invoke("restore", str(img), "--out", str(tmp_path / "out3"))
    assert "pass --model" in str(result.exception)


def test_predict_and_validate_take_a_name(zoo, tmp_path):
    from PIL import Image

    img = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    result = invoke("predict", str(img), "--model", "tiny-classifier", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["label"]
    result = invoke("validate", "tiny-encoder")
    assert result.exit_code == 0, result.output
    assert result.output.count("passed: True") == 2  # ONNX and timm weights
    model = enfold.zoo.get("tiny-mask")
    result = invoke("validate", str(model.artifact), "--reference",
                    str(model.references[model.artifact.name]))
    assert result.exit_code == 0 and "passed: True" in result.output
    # another artifact's recorded outputs are refused by sha256
    other = enfold.zoo.get("tiny-classifier").artifact
    result = invoke("validate", str(other), "--reference",
                    str(model.references[model.artifact.name]))
    assert "records the outputs of another file" in str(result.exception)


def test_models_lists_table_and_json(zoo):
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in ("tiny-mask", "tiny-classifier", "tiny-encoder"):
        assert name in result.output
    mask = enfold.zoo.get("tiny-mask")
    assert mask.sha256 in result.output and "8x8x3" in result.output
    assert "PSNR" in result.output and "reproduce: enfold pretrain" in result.output
    listed = json.loads(invoke("models", "--json").stdout)
    assert [m["name"] for m in listed] == ["tiny-mask", "tiny-classifier", "tiny-encoder"]
    assert listed[0]["sha256"] == mask.sha256 and listed[0]["metric"]["value"] > 0
    assert listed[0]["artifact"] == str(mask.artifact)


def test_registry_module_loads_no_model_code():
    """Listing and resolving read JSON only: neither torch nor the training stages load."""
    from probes import imported_after

    loaded = imported_after("import enfold.zoo; enfold.zoo.list_models()",
                            ("torch", "enfold.pipeline", "enfold.export"))
    assert [m for m in loaded if m == "torch" or m.startswith("enfold.")] == []


def test_readme_section_is_filled_by_the_build(tiny):
    text = tiny["readme"].read_text()
    section = text.split("<!-- zoo:start -->")[1].split("<!-- zoo:end -->")[0]
    assert "`tiny-mask`" in section and "MiB budget" in section
    total = tiny["doc"]["total_bytes"]
    assert f"{total / 2**20:.2f} MiB" in section
