"""``enfold export --target encoder --format safetensors``: timm builds the pretrained ViT from the
folder with its own loader, nothing downloaded, and its features equal enfold's encoder."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from conftest import run_cli

from enfold.errors import EnfoldError
from enfold.export.export import export_artifact
from enfold.export.graphs import build_spec
from enfold.export.timm_weights import validate_timm_weights
from enfold.export.validate import heldout_inputs


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """The session's tiny pretrain and finetune checkpoints."""
    return tiny_runs


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt by timm to fetch weights fails the test instead of reaching the network."""
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError(f"timm tried to download weights: {args}")

    for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
        monkeypatch.setattr(builder, name, refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def held_out(checkpoint) -> torch.Tensor:
    (inputs, _, _), _ = heldout_inputs(str(checkpoint), "encoder", 16)
    return inputs


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_timm_loads_the_pretrained_vit(runs, tmp_path, stage):
    ckpt = runs[stage]
    out = tmp_path / "timm"
    result = export_artifact(str(ckpt), "encoder", "safetensors", out)
    assert result["validation"]["passed"]
    config = json.loads((out / "config.json").read_text())
    # exactly the call a timm user makes: architecture, file overlay, their own class count
    vit = timm.create_model(config["architecture"], pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")),
                            num_classes=7, **config["model_args"]).eval()
    assert vit.num_classes == 7 and vit.head.out_features == 7
    x = held_out(ckpt)
    enfold_features = build_spec(str(ckpt), "encoder", trace=False).reference
    with torch.no_grad():
        ours = enfold_features(x)
        theirs = vit.forward_head(vit.forward_features(x), pre_logits=True)
        random = timm.create_model(config["architecture"], pretrained=False, num_classes=7,
                                   **config["model_args"]).eval()
        untrained = random.forward_head(random.forward_features(x), pre_logits=True)
    assert theirs.shape == ours.shape == (x.shape[0], config["num_features"])
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()
    assert not torch.allclose(untrained, ours, atol=1e-3)  # the weights really were loaded
    # timm's hub convention: `local-dir:` reads config.json and model.safetensors by itself
    local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.allclose(local.forward_head(local.forward_features(x), pre_logits=True),
                              ours, atol=1e-5)
    assert list(local.pretrained_cfg["mean"]) == config["pretrained_cfg"]["mean"]


def test_weights_hold_timm_keys_and_shapes(runs, tmp_path):
    from safetensors.torch import load_file

    export_artifact(str(runs["pretrain"]), "encoder", "safetensors", tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    plain = timm.create_model(config["architecture"], pretrained=False, num_classes=0,
                              **config["model_args"])
    expected = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    embed = config["num_features"]
    c, p = config["model_args"]["in_chans"], config["model_args"]["patch_size"]
    assert weights["patch_embed.proj.weight"].shape == (embed, c, p, p)  # a conv weight
    assert config["pretrained_cfg"]["input_size"] == [c, 8, 8]
    assert config["enfold"]["checkpoint_stage"] == "pretrain"
    card = (tmp_path / "README.md").read_text()
    assert "model.safetensors" in card and "max_abs_error" in card


def test_validate_command_checks_timm_weights(runs, tmp_path):
    export_artifact(str(runs["pretrain"]), "encoder", "safetensors", tmp_path, validate=False)
    weights = str(tmp_path / "model.safetensors")
    ok = run_cli("validate", weights, "--checkpoint", str(runs["pretrain"]))
    assert "passed: True" in ok.stdout, ok.stdout
    # the fine-tuned checkpoint has other weights: the check must see it (a ValidationError:
    # one line and exit code 2)
    other = run_cli("validate", weights, "--checkpoint", str(runs["finetune"]), check=False)
    assert other.returncode == 2 and "differs from enfold's encoder" in other.stderr, other
    assert "Traceback" not in other.stderr
    (tmp_path / "config.json").unlink()
    with pytest.raises(EnfoldError, match="lacks config.json"):
        validate_timm_weights(tmp_path, str(runs["pretrain"]))


def test_only_the_encoder_becomes_timm_weights(runs, tmp_path):
    with pytest.raises(EnfoldError, match="--target encoder"):
        export_artifact(str(runs["finetune"]), "classifier", "safetensors", tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
