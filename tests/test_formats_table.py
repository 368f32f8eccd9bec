"""The tables of formats and targets: every entry consistent, every name found, every unknown
name an error listing the choices, and every exporter and runner importable."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from enfold.artifact.formats import (
    BACKENDS,
    BY_NAME,
    EXPORT_FORMATS,
    FORMATS,
    TABLE,
    backend_format,
    format_named,
    format_of_file,
    is_format,
    resolve,
)
from enfold.artifact.target_table import (
    CHECKPOINT_TARGETS,
    TARGET_METHODS,
    TARGET_TABLE,
    TARGETS,
    target_named,
)
from enfold.errors import EnfoldError


@pytest.mark.parametrize("fmt", TABLE, ids=lambda f: f.name)
def test_every_suffix_of_a_format_maps_back_to_it(fmt):
    assert fmt.suffixes and fmt.suffix == fmt.suffixes[0]
    for suffix in fmt.suffixes:
        assert suffix.startswith(".") and suffix == suffix.lower()
        assert format_of_file(Path("some/dir") / f"model{suffix}") is fmt
        assert format_of_file(f"MODEL{suffix.upper()}") is fmt  # suffixes match in any case
        assert is_format(f"x{suffix}", fmt.name)
    assert format_named(fmt.name, tuple(BY_NAME)) is fmt


def test_no_suffix_belongs_to_two_formats():
    suffixes = [s for fmt in TABLE for s in fmt.suffixes]
    assert len(suffixes) == len(set(suffixes))


def test_an_unknown_suffix_is_an_error_listing_the_known_ones():
    with pytest.raises(EnfoldError, match=r"unknown file suffix '\.tflite'") as err:
        format_of_file("model.tflite")
    for fmt in TABLE:
        for suffix in fmt.suffixes:
            assert f"{suffix} ({fmt.name})" in str(err.value)
    with pytest.raises(EnfoldError, match=r"unknown file suffix '\(none\)'"):
        format_of_file("model")
    assert not is_format("model.tflite", "onnx")


def test_an_unknown_format_or_backend_is_an_error_listing_the_choices():
    with pytest.raises(EnfoldError, match="unknown --format 'tflite'") as err:
        format_named("tflite")
    assert all(name in str(err.value) for name in EXPORT_FORMATS)
    with pytest.raises(EnfoldError, match="unknown backend 'openvino'") as err:
        backend_format("openvino")
    assert all(name in str(err.value) for name in BACKENDS)
    with pytest.raises(EnfoldError, match="unknown --target 'segmenter'") as err:
        target_named("segmenter")
    assert all(name in str(err.value) for name in TARGETS)


def test_every_backend_runs_one_format_and_every_runnable_artifact_has_a_backend():
    assert BACKENDS[0] == "torch" and backend_format("torch").name == "checkpoint"
    assert len(set(BACKENDS)) == len(BACKENDS)
    for name in BACKENDS:
        assert backend_format(name).backend == name
    for name in FORMATS:
        fmt = BY_NAME[name]
        assert fmt.sidecar and fmt.backend in BACKENDS and fmt.runner and fmt.exporter


@pytest.mark.parametrize("fmt", TABLE, ids=lambda f: f.name)
def test_every_exporter_runner_and_check_resolves(fmt):
    # the table names functions as strings (the exporters sit above this layer); each must
    # import and take the arguments its caller passes
    if fmt.runner is not None:
        runner = fmt.runner_factory()
        assert list(inspect.signature(runner).parameters)[:4] == ["path", "meta", "device",
                                                                 "provider"]
    else:
        with pytest.raises(EnfoldError, match=f"does not run {fmt.name}"):
            fmt.runner_factory()
    if fmt.exporter is not None:
        exporter = fmt.exporter_function()
        params = list(inspect.signature(exporter).parameters)
        want = (["spec", "path", "precision", "profile"] if fmt.sidecar else
                ["checkpoint", "out_dir", "target", "validate"])
        assert params[:4] == want
    else:
        with pytest.raises(EnfoldError, match="does not write"):
            fmt.exporter_function()
    for ref in fmt.checks:
        assert callable(resolve(ref))
    assert set(fmt.precisions) <= {"fp32", "fp16"} and "fp32" in fmt.precisions
    assert set(fmt.beside) <= set(BY_NAME)
    assert fmt.validate_device in ("cpu", "cuda")


def test_resolving_a_missing_name_fails_loudly():
    with pytest.raises(AttributeError):
        resolve("enfold.artifact.formats:no_such_function")


def test_the_triton_names_are_distinct():
    served = [fmt.triton for fmt in TABLE if fmt.triton]
    assert len({t.platform for t in served}) == len(served)
    assert len({t.model_file for t in served}) == len(served)


def test_every_target_has_its_own_method_and_output_and_the_stages_agree():
    assert TARGETS == tuple(t.name for t in TARGET_TABLE)
    assert len(set(TARGET_METHODS.values())) == len(TARGETS)
    assert len({t.output for t in TARGET_TABLE}) == len(TARGETS)
    for target in TARGET_TABLE:
        assert target_named(target.name) is target
        served_by = {stage for stage, names in CHECKPOINT_TARGETS.items() if target.name in names}
        assert served_by == set(target.stages)


def test_the_session_has_every_targets_method():
    from enfold.artifact.session import InferenceSession

    for target in TARGET_TABLE:
        assert callable(getattr(InferenceSession, target.method))
