"""train.py: the loss goes down, checkpoints carry their settings, resume continues exactly."""
import json

import pytest
import torch

import train
from audio import UserError
from conftest import TINY_MODEL


def test_loss_goes_down_and_val_si_sdr_improves(trained):
    history = json.loads(trained.with_name("unet_history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert sum(h["train_loss"] for h in history[-3:]) < sum(h["train_loss"] for h in history[:3])
    best = max(history, key=lambda h: h["val_si_sdr"])
    assert best["val_si_sdr"] > best["val_noisy_si_sdr"] + 2.0  # dB
    assert trained.with_name("unet_curves.png").stat().st_size > 1000


def test_checkpoint_carries_everything(trained):
    ckpt = torch.load(trained, weights_only=True)
    assert ckpt["model_args"]["base_channels"] == 8 and ckpt["model_args"]["depth"] == 2
    assert ckpt["audio"] == {"sample_rate": 16000, "n_fft": 512, "hop_length": 128, "db_min": -100.0, "db_max": 20.0}
    assert ckpt["config"]["epochs"] == 10 and ckpt["config"]["lr"] == 3e-3
    assert len(ckpt["history"]) == ckpt["epoch"] and ckpt["code_version"]
    assert ckpt["best_val_si_sdr"] == max(h["val_si_sdr"] for h in ckpt["history"])
    last = torch.load(trained.with_name("unet_last.pt"), weights_only=True)
    assert last["epoch"] == 10 and "optimizer" in last and "scheduler" in last
    assert not list(trained.parent.glob("*.tmp"))


def test_resume_continues_where_it_stopped(prepared, tmp_path):
    common = ["--data-dir", str(prepared), *TINY_MODEL, "--base-channels", "4"]
    train.main([*common, "--out", str(tmp_path / "a" / "unet.pt"), "--epochs", "3"])
    train.main([*common, "--out", str(tmp_path / "b" / "unet.pt"), "--epochs", "3", "--stop-after", "2"])
    assert torch.load(tmp_path / "b" / "unet_last.pt", weights_only=True)["epoch"] == 2
    train.main([*common, "--out", str(tmp_path / "b" / "unet.pt"), "--epochs", "3", "--resume"])
    a = torch.load(tmp_path / "a" / "unet_last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "unet_last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


def test_init_from_fine_tunes(prepared, trained, tmp_path):
    train.main(["--data-dir", str(prepared), "--out", str(tmp_path / "ft.pt"), "--init-from", str(trained),
                "--epochs", "1", "--batch-size", "4", "--segment-seconds", "1"])
    ckpt = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert ckpt["model_args"]["base_channels"] == 8  # the architecture comes from the checkpoint


def test_errors(prepared, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train.main(["--data-dir", str(prepared), "--out", str(tmp_path / "x.pt"), "--resume"])
    with pytest.raises(UserError, match="no prepared set"):
        train.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "x.pt")])
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="not available"):
            train.main(["--data-dir", str(prepared), "--device", "cuda"])
    with pytest.raises(SystemExit):
        train.parse_args(["--epochs", "0"])
