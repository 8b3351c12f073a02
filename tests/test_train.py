"""train.py: the loss goes down, checkpoints carry their settings, resume continues exactly."""
import itertools
import json
import math

import pytest
import torch

import train
from audio import UserError
from checkpoint import describe_checkpoint, load_checkpoint
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
    assert "optimizer" not in ckpt  # the best checkpoint is the small one that ships
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
    # a best checkpoint (no optimizer state) resumes too: same schedule position, fresh AdamW moments
    best = tmp_path / "b" / "unet.pt"
    # and it carries on with the checkpoint's settings (data, model, batch size...) unless told otherwise
    train.main(["--out", str(tmp_path / "c" / "unet.pt"), "--epochs", "4", "--resume", str(best)])
    c = torch.load(tmp_path / "c" / "unet_last.pt", weights_only=True)
    assert c["epoch"] == 4 and len(c["history"]) == 4
    assert c["config"]["data_dir"] == str(prepared) and c["config"]["epochs"] == 4
    assert c["config"]["batch_size"] == a["config"]["batch_size"] != train.parse_args([]).batch_size


def test_init_from_fine_tunes(prepared, trained, tmp_path):
    train.main(["--data-dir", str(prepared), "--out", str(tmp_path / "ft.pt"), "--init-from", str(trained),
                "--epochs", "1", "--batch-size", "4", "--segment-seconds", "1"])
    ckpt = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert ckpt["model_args"]["base_channels"] == 8  # the architecture comes from the checkpoint
    # it names the run it started from, with that run's epoch, score and data; a second generation names both
    parent = torch.load(trained, weights_only=True)
    (run,) = ckpt["data"]["started_from"]
    assert run["path"] == str(trained) and run["epoch"] == parent["epoch"] and run["epochs"] == 10
    assert run["best_val_si_sdr"] == parent["best_val_si_sdr"] and run["data"] == parent["data"]
    train.main(["--out", str(tmp_path / "ft2.pt"), "--init-from", str(tmp_path / "ft.pt"), "--data-dir", str(prepared),
                "--epochs", "1", "--batch-size", "4", "--segment-seconds", "1"])
    ft2 = torch.load(tmp_path / "ft2.pt", weights_only=True)
    assert [r["path"] for r in ft2["data"]["started_from"]] == [str(trained), str(tmp_path / "ft.pt")]
    assert "started_from" not in ft2["data"]["started_from"][1]["data"]  # flat, not nested
    text = describe_checkpoint(ft2, tmp_path / "ft2.pt")
    assert text.count("started from: ") == 2 and f"started from: {trained}, epoch {parent['epoch']} of 10" in text
    assert "started_from" not in parent["data"]  # a run from scratch names none
    train.main(["--out", str(tmp_path / "ft2.pt"), "--resume", "--epochs", "2"])  # and --resume keeps the lineage
    resumed = torch.load(tmp_path / "ft2_last.pt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["data"]["started_from"] == ft2["data"]["started_from"]


def test_init_from_a_magnitude_model_into_complex_subtraction(prepared, trained, tmp_path):
    """--subtraction complex with --init-from a magnitude model: its U-Net under a new complex head, trained on."""
    out = tmp_path / "c.pt"
    train.main(["--data-dir", str(prepared), "--out", str(out), "--init-from", str(trained), "--subtraction", "complex",
                "--epochs", "2", "--batch-size", "4", "--segment-seconds", "1"])
    ckpt, parent = torch.load(out, weights_only=True), torch.load(trained, weights_only=True)
    assert ckpt["model_args"] == {**parent["model_args"], "subtraction": "complex"}
    assert [r["path"] for r in ckpt["data"]["started_from"]] == [str(trained)]
    inner = "unet.bottleneck.conv.0.weight"  # trained on from the parent's weights, not from scratch
    assert torch.nn.functional.cosine_similarity(ckpt["model"][inner].flatten(), parent["model"][inner].flatten(), 0) > 0.9
    history = ckpt["history"]
    assert max(h["val_si_sdr"] for h in history) > history[0]["val_noisy_si_sdr"] + 1.0  # the new head learned
    with pytest.raises(UserError, match="architecture wins"):  # other architecture flags still must agree
        train.main(["--data-dir", str(prepared), "--out", str(tmp_path / "d.pt"), "--init-from", str(trained),
                    "--subtraction", "complex", "--depth", "3"])


def test_init_from_adds_temporal_blocks(prepared, trained, tmp_path):
    """--temporal-blocks with --init-from a model without them: its layers carry over, the blocks train."""
    out = tmp_path / "t.pt"
    train.main(["--data-dir", str(prepared), "--out", str(out), "--init-from", str(trained), "--temporal-blocks", "2",
                "--epochs", "1", "--batch-size", "4", "--segment-seconds", "1"])
    ckpt, parent = torch.load(out, weights_only=True), torch.load(trained, weights_only=True)
    assert ckpt["model_args"] == {**parent["model_args"], "temporal_blocks": 2}
    gains = [ckpt["model"][f"unet.temporal.{k}.norm.weight"] for k in range(2)]
    assert all(g.abs().max() > 0 for g in gains)  # started at zero, moved by training
    assert "2 temporal blocks" in describe_checkpoint(ckpt, out)
    with pytest.raises(SystemExit):
        train.main(["--data-dir", str(prepared), "--out", str(tmp_path / "u.pt"), "--temporal-blocks", "9"])


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


def test_resume_refuses_a_different_architecture(prepared, trained, tmp_path):
    with pytest.raises(UserError, match="--base-channels 32 but .* has 8"):
        train.main(["--data-dir", str(prepared), "--out", str(tmp_path / "x.pt"), "--init-from", str(trained),
                    "--base-channels", "32"])


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(prepared, tmp_path):
    """Kill training at a random moment; --resume continues from the last epoch saved and ends where an
    uninterrupted run ends (same weights: same optimizer state, same data order)."""
    import random
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    common = ["--data-dir", str(prepared), *TINY_MODEL, "--base-channels", "4", "--epochs", "3"]
    train.main([*common, "--out", str(tmp_path / "a" / "unet.pt")])
    b = tmp_path / "b" / "unet.pt"
    cmd = [sys.executable, str(ROOT / "train.py"), *common, "--out", str(b)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not b.with_name("unet_last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.uniform(0, 0.5))  # somewhere in epoch 2, or while a checkpoint is being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(b.with_name("unet_last.pt"), weights_only=True)  # whole, never half-written
    assert 1 <= saved["epoch"] <= 3
    train.main([*common, "--out", str(b), "--resume"] if saved["epoch"] < 3 else [*common, "--out", str(b), "--resume", "--epochs", "3"])
    a_last = torch.load(tmp_path / "a" / "unet_last.pt", weights_only=True)
    b_last = torch.load(b.with_name("unet_last.pt"), weights_only=True)
    for k in a_last["model"]:
        assert torch.equal(a_last["model"][k], b_last["model"][k]), k
    assert not [p for p in b.parent.iterdir() if p.name.endswith(".tmp")]


def test_torchrun_two_cpu_processes_agree(prepared, tmp_path):
    """DistributedDataParallel over gloo: two ranks train a few steps and end with identical weights."""
    import subprocess
    import sys
    from conftest import ROOT
    out = tmp_path / "ddp" / "unet.pt"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "train.py"), "--data-dir", str(prepared), "--out", str(out), *TINY_MODEL,
                        "--base-channels", "4", "--epochs", "2"],
                       capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "x 2 processes" in r.stdout
    assert "weights identical on all 2 ranks: True" in r.stdout
    assert r.stdout.count("epoch 2: train loss") == 1  # only rank 0 prints
    ckpt = torch.load(out.with_name("unet_last.pt"), weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2


def test_a_new_run_never_replaces_a_trained_model(prepared, trained, tmp_path):
    out = tmp_path / "unet.pt"
    out.write_bytes(trained.read_bytes())
    with pytest.raises(UserError, match="exists; continue it with --resume"):
        train.main(["--data-dir", str(prepared), "--out", str(out), "--epochs", "1", *TINY_MODEL])
    assert out.read_bytes() == trained.read_bytes()


def test_checkpoint_says_what_it_learned_from(trained, prepared):
    import hashlib
    data = torch.load(trained, weights_only=True)["data"]
    summary = json.loads((prepared / "summary.json").read_text())["train"]
    assert data["manifest_md5"] == hashlib.md5((prepared / "manifest.csv").read_bytes()).hexdigest()
    for key in ("n_speakers", "n_speech_files", "speech_minutes", "n_noise_files", "noise_minutes"):
        assert data[key] == summary[key] and data[key] > 0, key
    assert data["n_speakers"] == 2 and data["n_speech_files"] == 6  # 6 speakers of 3 files: 2 each to val and test
    assert data["speech_dirs"] and data["noise_dirs"]


def test_corpus_weights_draw_as_asked(prepared, tmp_path):
    import numpy as np
    from dataset import RemixDataset
    ds = RemixDataset(prepared, "train")
    ds.corpora = ["a" if i % 4 == 0 else "b" for i in range(len(ds))]  # a quarter of the voices from corpus a
    args = train.parse_args(["--corpus-weights", "a=3", "--batch-size", "4"])
    drawn = np.array([ds.corpora[i] for e in range(200) for i in train.epoch_order(ds, e, args, 0, 1)])
    assert np.mean(drawn == "a") == pytest.approx(0.5, abs=0.03)  # 3 x 1/4 against 3/4: half
    assert train.epoch_order(ds, 1, args, 0, 1) == train.epoch_order(ds, 1, args, 0, 1)  # from (seed, epoch)
    assert train.epoch_order(ds, 1, args, 0, 1) != train.epoch_order(ds, 2, args, 0, 1)
    with pytest.raises(UserError, match="no corpus c"):
        ds.corpus_weights({"c": 2.0})
    with pytest.raises(SystemExit):
        train.parse_args(["--corpus-weights", "a"])


def test_eq_reshapes_voice_and_noise_before_mixing(prepared):
    import numpy as np
    from scipy.signal import welch
    from dataset import RemixDataset, random_eq
    plain, eq = RemixDataset(prepared, "train", 1.0), RemixDataset(prepared, "train", 1.0, eq_prob=1.0)

    def snr(noisy, voice):
        return 10 * np.log10(np.sum(voice.numpy() ** 2) / np.sum((noisy - voice).numpy() ** 2))

    def band_db(x):  # long-term spectrum in 8 bands
        _, pxx = welch(x.numpy(), nperseg=256)
        return 10 * np.log10(np.array([b.mean() for b in np.array_split(pxx, 8)]) + 1e-20)
    tilts = []
    for i in range(len(plain)):
        (n0, v0), (n1, v1) = plain[i], eq[i]
        assert torch.equal(n1, eq[i][0])  # drawn from (seed, epoch, index): the same item every time
        assert snr(n1, v1) == pytest.approx(snr(n0, v0), abs=0.01)  # filtered first, then mixed at the drawn SNR
        if v0.abs().max() > 0:
            shape = band_db(v1) - band_db(v0)  # the same crop of the same voice, reshaped
            tilts.append(shape.max() - shape.min())
    assert np.median(tilts) > 2.0
    rng = np.random.default_rng(0)
    white = rng.standard_normal(16000)
    gains = [10 * np.log10(np.mean(random_eq(white, rng) ** 2)) for _ in range(200)]
    assert -20 < min(gains) and max(gains) < 20  # stable filters of bounded gain
    with pytest.raises(SystemExit):
        train.parse_args(["--eq-prob", "1.5"])


def test_noise_mixing_puts_two_recordings_in_a_mixture(prepared, tmp_path):
    import numpy as np
    import soundfile as sf
    from dataset import RemixDataset
    t = np.arange(16000) / 16000
    tones = []
    for f in (500, 3000):  # two noise recordings told apart by their one tone
        tones.append(tmp_path / f"tone{f}.wav")
        sf.write(tones[-1], (0.1 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)

    def tones_heard(ds):
        heard = []
        for i in range(len(ds)):
            noisy, voice = ds[i]
            spec = np.abs(np.fft.rfft((noisy - voice).numpy().astype(np.float64)))
            peak = spec.max()
            heard.append(sum(spec[f - 3:f + 4].max() > 0.05 * peak for f in (500, 3000)))  # 1 Hz bins: 1 s crops
        return np.array(heard)
    plain, mixed = (RemixDataset(prepared, "train", 1.0, noise_mix_prob=p) for p in (0.0, 1.0))
    for ds in (plain, mixed):
        ds.noises, ds.noise_corpora = tones * 10, ["a", "b"] * 10
    one, both = tones_heard(plain), tones_heard(mixed)
    assert (one == 1).all()  # one recording per mixture
    assert (both >= 1).all() and 0.25 < (both == 2).mean() < 0.75  # the second is the other recording half the time
    half = RemixDataset(prepared, "train", 1.0, noise_mix_prob=0.5)
    assert torch.equal(half[0][0], half[0][0])  # still drawn from (seed, epoch, index)
    with pytest.raises(SystemExit):
        train.parse_args(["--noise-mix-prob", "-0.1"])


def test_speed_perturbation_moves_the_pitch_of_voice_and_noise(prepared, tmp_path):
    import numpy as np
    import soundfile as sf
    from dataset import RemixDataset
    t = np.arange(3 * 16000) / 16000
    for name, f in (("voice", 1000), ("noise", 4000)):
        sf.write(tmp_path / f"{name}.wav", (0.1 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)

    def peaks(ds):  # the strongest frequency (1 Hz bins: 1 s crops) of the voice and of the noise of each item
        out = []
        for i in range(len(ds)):
            noisy, voice = (x.numpy().astype(np.float64) for x in ds[i])
            assert len(voice) == len(noisy) == 16000
            out.append([np.argmax(np.abs(np.fft.rfft(x))) for x in (voice, noisy - voice)])
        return np.array(out)
    plain, fast = (RemixDataset(prepared, "train", 1.0, speed_prob=p) for p in (0.0, 1.0))
    for ds in (plain, fast):
        ds.voices, ds.noises = [tmp_path / "voice.wav"] * len(ds), [tmp_path / "noise.wav"] * len(ds)
    assert (peaks(plain) == [1000, 4000]).all()
    moved = peaks(fast)
    assert (np.abs(moved / [1000, 4000] - 1) <= 0.1 + 1e-3).all()  # within 10%, in both directions
    assert (moved[:, 0] < 990).any() and (moved[:, 0] > 1010).any() and (moved[:, 1] != 4000).mean() > 0.8
    assert not (moved[:, 0] / 1000 == moved[:, 1] / 4000).all()  # voice and noise each get their own speed
    with pytest.raises(SystemExit):
        train.parse_args(["--speed-prob", "2"])


def test_complex_subtraction_trains_and_is_kept_in_the_checkpoint(prepared, tmp_path):
    from checkpoint import load_model
    out = tmp_path / "complex" / "unet.pt"
    train.main(["--data-dir", str(prepared), "--out", str(out), "--epochs", "4", *TINY_MODEL,
                "--subtraction", "complex", "--complex-weight", "0.5"])
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["model_args"]["subtraction"] == "complex" and ckpt["config"]["complex_weight"] == 0.5
    history = ckpt["history"]
    assert max(h["val_si_sdr"] for h in history) > history[0]["val_noisy_si_sdr"] + 1.0  # it learned to denoise
    assert load_model(out).subtraction == "complex"
    with pytest.raises(UserError, match="architecture wins"):
        train.main(["--out", str(out), "--resume", "--subtraction", "magnitude"])


def test_noise_weights_draw_noise_by_corpus(prepared, monkeypatch):
    import numpy as np
    import dataset
    ds = dataset.RemixDataset(prepared, "train", 1.0)
    assert set(ds.noise_corpora) == {"hiss", "band"}  # the folders inside the one --noise-dir
    drawn = []
    read = dataset.read_wav
    monkeypatch.setattr(dataset, "read_wav", lambda p: drawn.append(p) or read(p))

    def hiss_share(epochs):
        drawn.clear()
        for e in range(epochs):
            ds.set_epoch(e)
            for i in range(len(ds)):
                ds[i]
        noise = [p for p in drawn if p.parent.name == "noise"]
        return np.mean([ds.noise_corpora[ds.noises.index(p)] == "hiss" for p in noise])
    even = np.mean(np.array(ds.noise_corpora) == "hiss")
    assert hiss_share(40) == pytest.approx(even, abs=0.05)  # no weights: as the set holds them
    w = ds.set_noise_weights({"hiss": 3})
    assert w.sum() == pytest.approx(1)
    assert hiss_share(40) == pytest.approx(3 * even / (3 * even + 1 - even), abs=0.05)
    ds.set_epoch(0)
    assert torch.equal(ds[0][0], ds[0][0])  # still drawn from (seed, epoch, index)
    ds.set_noise_weights({"hiss": 0})
    assert hiss_share(5) == 0
    with pytest.raises(UserError, match="no noise corpus rain"):
        ds.set_noise_weights({"rain": 2})
    with pytest.raises(SystemExit):
        train.parse_args(["--noise-weights", "hiss"])
    assert dataset.noise_corpus("esc10/audio/1-1.flac") == "esc10" and dataset.noise_corpus("n1.wav") == ""


def test_a_time_budget_run_ends_on_time_with_its_checkpoints(prepared, tmp_path):
    """--time-budget: validations along the time, the schedule fitted to it, best and last checkpoints at the
    end, and where and how long it trained in ckpt["compute"]; here with the batches mixed in memory."""
    out = tmp_path / "unet.pt"
    train.main(["--data-dir", str(prepared), "--out", str(out), *TINY_MODEL, "--time-budget", "0.25", "--evals", "3",
                "--mixing", "device", "--residual-weight", "0.1", "--mr-weight", "0.1"])
    last = torch.load(out.with_name("unet_last.pt"), weights_only=True)
    best = torch.load(out, weights_only=True)
    history = last["history"]
    assert 2 <= len(history) <= 4 and all(torch.isfinite(torch.tensor(h["val_loss"])) for h in history)
    assert history[-1]["epoch"] > history[0]["epoch"] > 0
    lrs = [h["lr"] for h in history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05 * 3e-3 < lrs[0]  # the cosine runs out with the time
    (compute,) = last["compute"]
    assert compute["mixing"] == "device" and compute["steps"] > 0 and compute["audio_hours"] > 0
    assert compute["minutes"] <= 0.25 + 0.2  # it stops when the time is spent (plus the last validation's save)
    assert best["best_val_si_sdr"] == max(h["val_si_sdr"] for h in history)
    text = describe_checkpoint(last, out)
    assert "0.25-minute budget" in text and "compute: " in text and "steps" in text


def test_a_budget_spans_working_sessions(prepared, tmp_path):
    """--session-minutes ends a session with its checkpoints partway through the budget; --resume carries on with
    the budget's clock (the learning rate where it stopped), and the compute record adds the sessions up."""
    out = tmp_path / "unet.pt"
    budget = ["--data-dir", str(prepared), "--out", str(out), "--time-budget", "0.6", "--evals", "6"]
    train.main([*budget, *TINY_MODEL, "--session-minutes", "0.2"])
    first = torch.load(out.with_name("unet_last.pt"), weights_only=True)
    (session,) = first["compute"]
    assert 0.15 <= session["minutes"] <= 0.35 and first["history"][-1]["lr"] > 0.3 * 3e-3  # stopped early, LR high
    train.main([*budget, "--resume"])
    last = torch.load(out.with_name("unet_last.pt"), weights_only=True)
    assert len(last["compute"]) == 2 and last["compute"][0] == session
    assert 0.5 <= sum(c["minutes"] for c in last["compute"]) <= 0.85
    lrs = [h["lr"] for h in last["history"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.05 * 3e-3  # one schedule across both sessions
    assert "in 2 sessions" in describe_checkpoint(last, out)
    with pytest.raises(SystemExit):
        train.parse_args(["--session-minutes", "5"])  # only with a --time-budget


def test_ranks_share_every_epoch_equally():
    from types import SimpleNamespace
    args = SimpleNamespace(seed=0, corpus_weights=[])
    voices = list(range(10))
    shares = [train.epoch_order(voices, 1, args, rank, 3) for rank in range(3)]
    assert len({len(s) for s in shares}) == 1  # the same number of steps on every rank
    assert sorted(set(sum(shares, []))) == voices


def test_the_band_unet_trains_with_its_own_hop(trained_bands, prepared, tmp_path):
    """--arch bands: its size and STFT hop (256) in the checkpoint, validation better than the input, and the
    checkpoint's architecture wins on --resume."""
    ckpt = load_checkpoint(trained_bands)
    assert ckpt["model_args"]["arch"] == "bands" and ckpt["model_args"]["base_channels"] == 4
    assert ckpt["audio"]["hop_length"] == 256
    best = max(h["val_si_sdr"] for h in ckpt["history"])
    assert best > ckpt["history"][0]["val_noisy_si_sdr"] + 1
    assert ckpt["history"][-1]["train_loss"] < ckpt["history"][0]["train_loss"]
    with pytest.raises(UserError, match="hop 256 wins"):
        train.main(["--data-dir", str(prepared), "--init-from", str(trained_bands), "--out", str(tmp_path / "x.pt"),
                    "--epochs", "1", "--hop-length", "128"])
    with pytest.raises(SystemExit):  # the band U-Net subtracts magnitudes
        train.parse_args(["--arch", "bands", "--subtraction", "complex"])


@pytest.mark.parametrize("mixing", ["loader", "device"])
def test_a_resume_within_an_epoch_goes_on_with_the_rest_of_it(prepared, mixing):
    """A --time-budget checkpoint falls within an epoch (position 1.4: 40% of the second done); --resume goes on
    with that epoch's remaining batches, the very ones an uninterrupted run would have drawn."""
    cpu = torch.device("cpu")
    args = train.parse_args(["--data-dir", str(prepared), *TINY_MODEL, "--time-budget", "1", "--batch-size", "4",
                             "--mixing", mixing])
    data = train.load_data(args, 0, 1, cpu)
    steps = math.ceil(len(train.epoch_order(data.train_set, 2, args, 0, 1)) / args.batch_size)
    assert steps >= 3
    whole = list(itertools.islice(train.batch_stream(data, args, 0, 1, cpu, 1), steps))  # the second epoch
    assert [p for p, _, _ in whole] == pytest.approx([1 + (k + 1) / steps for k in range(steps)])
    for k in (1, steps - 1):
        resumed = list(itertools.islice(train.batch_stream(data, args, 0, 1, cpu, round(1 + k / steps, 3)), steps - k + 1))
        assert [p for p, _, _ in resumed[:-1]] == pytest.approx([p for p, _, _ in whole[k:]])
        assert all(torch.equal(r[1], w[1]) and torch.equal(r[2], w[2]) for r, w in zip(resumed, whole[k:]))
        assert 2 < resumed[-1][0] < 3  # then the third epoch


def test_a_resumed_clock_validates_at_the_marks_still_ahead():
    clock = train.Clock(10, 5, 300, torch.device("cpu"), 1)  # 5 validations over 600 s, 300 s spent before
    assert clock.marks == [360, 480] and not clock.due()
