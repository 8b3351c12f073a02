"""checkpoint.py: one home for writing, reading, checking and describing checkpoints."""
import subprocess
import sys

import pytest
import torch

import checkpoint
from audio import UserError
from checkpoint import describe_checkpoint, load_checkpoint, load_model, save_checkpoint
from conftest import ROOT
from unet import MODEL_DEFAULTS, ModelConfig, NoiseSubtractionDenoiser


def tiny(**kw):
    torch.manual_seed(0)
    return NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2, **kw)).eval()


def test_save_and_load_give_the_same_denoiser(tmp_path):
    model = tiny(floor_db=-30.0, subtraction="complex")
    save_checkpoint(tmp_path / "m.pt", model, epoch=3)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)  # plain types only: weights_only reads it
    assert ckpt["model_args"] == dict(MODEL_DEFAULTS, base_channels=4, depth=2, floor_db=-30.0, subtraction="complex")
    assert ckpt["epoch"] == 3 and ckpt["audio"] == model.audio.to_dict()
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(1, 6000) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_older_checkpoints_without_subtraction_are_magnitude_models(tmp_path):
    ckpt = dict(torch.load(ROOT / "models" / "unet.pt", weights_only=True))
    ckpt["model_args"] = {k: v for k, v in ckpt["model_args"].items() if k != "subtraction"}
    torch.save(ckpt, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").subtraction == "magnitude"


def test_bad_model_files(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 100)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="missing model_args"):
        load_model(tmp_path / "other.pt")
    model = tiny()
    save_checkpoint(tmp_path / "future.pt", model)
    ckpt = torch.load(tmp_path / "future.pt", weights_only=True)
    ckpt["model_args"]["heads"] = 4  # a setting this code does not know
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(UserError, match="future.pt does not match this code's model .*heads"):
        load_model(tmp_path / "future.pt")


def test_truncated_or_mismatched_checkpoint_is_named(trained, tmp_path):
    data = trained.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.pt is not a readable checkpoint"):
        load_model(tmp_path / "cut.pt")
    ckpt = torch.load(trained, weights_only=True)
    ckpt["model_args"] = {**ckpt["model_args"], "base_channels": 12}  # weights of one configuration, args of another
    torch.save(ckpt, tmp_path / "other_config.pt")
    with pytest.raises(UserError, match="does not match this code's model .*size mismatch"):
        load_model(tmp_path / "other_config.pt")


def test_a_missing_default_model_says_how_to_get_it_back(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL", tmp_path / "models" / "unet.pt")
    with pytest.raises(UserError, match="git checkout models/unet.pt.*python train.py"):
        load_checkpoint(tmp_path / "models" / "unet.pt")


def test_describe_a_trained_checkpoint(trained):
    ckpt = load_checkpoint(trained)
    said = describe_checkpoint(ckpt, trained)
    assert "U-Net base 8 depth 2" in said and "magnitude subtraction" in said
    assert f"epoch {ckpt['epoch']} of 10, best validation SI-SDR {ckpt['best_val_si_sdr']:.2f} dB" in said  # the best epoch
    r = subprocess.run([sys.executable, str(ROOT / "checkpoint.py"), str(trained)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == said
    assert "weights" not in said and "two noise" not in said  # drawn evenly, one noise each: nothing to say
    ckpt["config"].update(corpus_weights=["spk0=2"], noise_weights=["hiss=3"], noise_mix_prob=0.5, speed_prob=0.3)
    said = describe_checkpoint(ckpt, trained)
    assert "corpus weights: spk0=2" in said and "noise weights: hiss=3" in said
    assert "two noise recordings in 50% of the training mixtures" in said and "slower in 30% of the draws" in said
