"""benchmarks/build_zoo.py's edges: a restorer this enfold cannot export (a noise-level one) is
skipped with the reason while the others build, a missing run is an error before any work, and
the shipped list names a config and a run for every model."""

from __future__ import annotations

import pytest
from conftest import DIGITS_TINY, ROOT, train
from tiny_zoo import TINY_RUN, build_zoo

from enfold.errors import EnfoldError


def _noise_level_spec(run):
    return build_zoo.ModelSpec("tiny-noise", "noise", "restorer", str(run), str(DIGITS_TINY),
                               ("enfold pretrain ...",), "noise", try_fp16=False)


def test_a_noise_level_restorer_ships_with_sigma_as_an_input(tmp_path):
    from enfold.runtime import load
    from enfold.zoo.checks import check_zoo

    run = tmp_path / "noise"
    train("pretrain", DIGITS_TINY, run, [*TINY_RUN, "corrupt.tasks=[noise]",
                                         "model.noise_level_input=true",
                                         "corrupt.noise.sigma=0.02", "corrupt.noise.sigma_max=0.2"])
    zoo = tmp_path / "zoo"
    doc, skipped = build_zoo.build([_noise_level_spec(run)], zoo, log=lambda _line: None)
    assert not skipped
    (entry,) = doc["models"]
    assert "at sigma 0.1" in entry["metric"]["dataset"]  # scored at one stated noise level
    assert load(zoo / entry["artifact"]).restorer_inputs == ["sigma"]
    # its recorded outputs were made with a sigma input, and CI's checks pass on them
    assert set(check_zoo(zoo)) == {"tiny-noise"}


def test_a_missing_run_is_an_error_before_any_work(tmp_path):
    spec = _noise_level_spec(tmp_path / "not-trained")
    with pytest.raises(EnfoldError, match="(?s)missing training runs.*tiny-noise"):
        build_zoo.build([spec], tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


def test_unknown_only_name_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_zoo.main(["--only", "srr", "--no-readme"])
    assert "unknown --only srr" in capsys.readouterr().err


def test_the_shipped_list_names_existing_configs():
    names = [s.name for s in build_zoo.SHIPPED]
    assert len(set(names)) == len(names)
    tasks = [s.task for s in build_zoo.SHIPPED]
    assert len(set(tasks)) == len(tasks)  # `enfold restore --task` picks one model per task
    for spec in build_zoo.SHIPPED:
        assert (ROOT / spec.config).is_file(), spec.config
        assert any(spec.run in command for command in spec.train), spec.name
    noise = next(s for s in build_zoo.SHIPPED if s.name == "noise")
    assert noise.grid_shifts is None  # the runtime's blended tiles replace grid shifts
    mask = next(s for s in build_zoo.SHIPPED if s.name == "mask")
    assert mask.config == "configs/pretrain/restore-mask-freeform.yaml"  # holes of any shape
