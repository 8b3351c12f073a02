"""denoise.py: better output than input, same rate/channels/length, seamless chunks, safe files, clear errors."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import denoise
from audio import UserError, si_sdr
from checkpoint import load_checkpoint, load_model
from conftest import ROOT, noise_clip, voiced
from unet import with_temporal_blocks


def run(*argv):
    denoise.main([str(a) for a in argv])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_is_better_than_input(trained, prepared, tmp_path):
    for i in range(3):
        noisy = prepared / "test" / "noisy_voice" / f"test_{i:05d}.wav"
        voice, _ = sf.read(prepared / "test" / "voice" / f"test_{i:05d}.wav", dtype="float32")
        out = tmp_path / f"{i}.wav"
        run(noisy, "-o", out, "--model", trained)
        y, _ = sf.read(out, dtype="float32")
        before = si_sdr(torch.from_numpy(sf.read(noisy, dtype="float32")[0]), torch.from_numpy(voice))
        assert si_sdr(torch.from_numpy(y), torch.from_numpy(voice)) > before + 1.0


@pytest.mark.parametrize("sr,channels,subtype,ext", [(44100, 2, "PCM_16", ".wav"), (8000, 1, "FLOAT", ".wav"),
                                                    (22050, 6, "PCM_24", ".flac"), (16000, 1, "PCM_16", ".ogg")])
def test_keeps_rate_channels_and_length(trained, tmp_path, sr, channels, subtype, ext):
    rng = np.random.default_rng(0)
    n = int(sr * 1.3) + 7
    x = np.stack([voiced(n / sr, sr, 120 + 20 * c, rng)[:n] + noise_clip("hiss", n / sr, sr, rng)[:n] * 0.3
                  for c in range(channels)], axis=1)
    inp = tmp_path / f"in put स्वर{ext}"  # spaces and Devanagari in the name
    sf.write(inp, x, sr, subtype=subtype if ext != ".ogg" else "VORBIS")
    before = digest(inp)
    run(inp, "--model", trained)
    out = tmp_path / f"in put स्वर_denoised{'.wav' if ext == '.ogg' else ext}"
    info, src = sf.info(out), sf.info(inp)
    assert (info.samplerate, info.channels, info.frames) == (sr, channels, src.frames)
    assert digest(inp) == before  # the input is never touched


@pytest.mark.parametrize("which", ["trained", "trained_bands"])
def test_chunked_matches_whole_file(which, request):
    model = load_model(request.getfixturevalue(which))
    rng = np.random.default_rng(1)
    x = (voiced(7.0, 16000, 130, rng) + 0.3 * noise_clip("hiss", 7.0, 16000, rng))[None]
    whole = denoise.denoise_array(model, x, 16000, chunk_seconds=60)
    chunked = denoise.denoise_array(model, x, 16000, chunk_seconds=1.0)
    assert chunked.shape == whole.shape == x.shape
    assert np.sqrt(np.mean((chunked - whole) ** 2)) < 1e-3 * np.sqrt(np.mean(whole ** 2))


def test_chunks_carry_enough_context_for_temporal_blocks(trained):
    """Temporal blocks see further along time: the context each chunk carries grows with them, and chunked
    output stays exactly the whole file's."""
    model = with_temporal_blocks(load_model(trained), 3).eval()
    for block in model.unet.temporal:
        torch.nn.init.normal_(block.norm.weight)
    rng = np.random.default_rng(2)
    x = (voiced(6.0, 16000, 130, rng) + 0.3 * noise_clip("hiss", 6.0, 16000, rng))[None]
    whole = denoise.denoise_array(model, x, 16000, chunk_seconds=60)
    chunked = denoise.denoise_array(model, x, 16000, chunk_seconds=1.0)
    assert np.abs(chunked - whole).max() < 1e-6 * np.abs(whole).max()
    assert denoise.context_samples(model, 16000) > denoise.context_samples(load_model(trained), 16000)


def test_silence_in_silence_out(trained, tmp_path):
    sf.write(tmp_path / "zeros.wav", np.zeros(16000, np.float32), 16000, subtype="FLOAT")
    run(tmp_path / "zeros.wav", "--model", trained)
    y, _ = sf.read(tmp_path / "zeros_denoised.wav")
    assert np.all(y == 0)


def test_never_overwrites_by_accident(trained, tmp_path):
    sf.write(tmp_path / "a.wav", np.random.default_rng(0).standard_normal(8000) * 0.1, 16000)
    before = digest(tmp_path / "a.wav")
    with pytest.raises(UserError, match="refusing to overwrite the input"):
        run(tmp_path / "a.wav", "-o", tmp_path / "a.wav", "--model", trained, "--overwrite")
    run(tmp_path / "a.wav", "--model", trained, "--plot")
    assert (tmp_path / "a_denoised.png").stat().st_size > 1000
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        run(tmp_path / "a.wav", "--model", trained)
    run(tmp_path / "a.wav", "--model", trained, "--overwrite")
    with pytest.raises(UserError, match="output folder does not exist"):
        run(tmp_path / "a.wav", "-o", tmp_path / "nope" / "b.wav", "--model", trained)
    assert digest(tmp_path / "a.wav") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "a_denoised.png", "a_denoised.wav"]


def test_several_inputs_into_a_folder(trained, tmp_path):
    for name in ("x.wav", "y.wav"):
        sf.write(tmp_path / name, np.random.default_rng(0).standard_normal(4000) * 0.1, 16000)
    (tmp_path / "out").mkdir()
    run(tmp_path / "x.wav", tmp_path / "y.wav", "-o", tmp_path / "out", "--model", trained)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_denoised.wav", "y_denoised.wav"]


def test_cli_errors_are_one_line(tmp_path):
    """A missing model: one line, non-zero exit, no traceback; for the default one, how to get it back."""
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    r = subprocess.run([sys.executable, str(ROOT / "denoise.py"), "a.wav", "--model", "models/unet.pt"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: no model at models/unet.pt"
    r = subprocess.run([sys.executable, str(ROOT / "denoise.py"), "missing.wav"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip() == "error: no such file: missing.wav"
    assert not (tmp_path / "a_denoised.wav").exists()


def test_the_pretrained_model_ships_and_is_the_default(tmp_path):
    """`python denoise.py noisy.wav` on a fresh clone uses models/unet.pt and makes the file better."""
    path = ROOT / "models" / "unet.pt"
    assert path.stat().st_size <= 20e6
    ckpt = load_checkpoint(path)
    runs = ckpt.get("averaged_from") or [ckpt]  # one training run, or average.py's mean of several
    assert all(r["config"]["epochs"] >= 1 for r in runs) and ckpt["data"]["manifest_md5"] and "optimizer" not in ckpt
    rng = np.random.default_rng(1)
    voice = voiced(4.0, 16000, 120, rng)
    for kind in ("hiss", "band"):
        noise = noise_clip(kind, 4.0, 16000, rng)
        noise *= np.sqrt(np.sum(voice ** 2) / np.sum(noise ** 2))  # 0 dB SNR
        sf.write(tmp_path / f"{kind}.wav", voice + noise, 16000, subtype="FLOAT")
        r = subprocess.run([sys.executable, str(ROOT / "denoise.py"), f"{kind}.wav"], cwd=tmp_path,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        y, _ = sf.read(tmp_path / f"{kind}_denoised.wav", dtype="float32")
        gain = si_sdr(torch.from_numpy(y), torch.from_numpy(voice)) - si_sdr(torch.from_numpy(voice + noise),
                                                                             torch.from_numpy(voice))
        assert gain > 5.0, (kind, float(gain))
    sf.write(tmp_path / "zeros.wav", np.zeros(16000, np.float32), 16000, subtype="FLOAT")
    subprocess.run([sys.executable, str(ROOT / "denoise.py"), "zeros.wav"], cwd=tmp_path, check=True)
    assert np.all(sf.read(tmp_path / "zeros_denoised.wav")[0] == 0)


def test_info_says_what_the_model_learned_from(trained, capsys):
    import denoise
    denoise.main(["--info", "--model", str(trained)])
    said = capsys.readouterr().out
    assert "training split: 2 speakers, 6 speech recordings" in said and "manifest.csv MD5" in said
    ckpt = torch.load(trained, weights_only=True)
    assert f"{ckpt['data']['noise_minutes']} min" in said
    with pytest.raises(SystemExit) as e:  # a checkpoint given as a file is refused, not swapped for the default model
        denoise.main(["--info", str(trained)])
    assert e.value.code == 2 and "--info --model" in capsys.readouterr().err


def test_floor_db_is_the_one_runtime_floor(trained, prepared, tmp_path):
    """--floor-db sets model.config.floor_db: 0 dB attenuates nothing (the input comes back), a higher floor
    keeps more background than the model's own, and the checkpoint is left as it was."""
    noisy = prepared / "test" / "noisy_voice" / "test_00000.wav"
    before = digest(trained)
    x, _ = sf.read(noisy, dtype="float32")
    outs = {}
    for floor in ("0", "-12", None):
        out = tmp_path / f"floor_{floor}.wav"
        run(noisy, "-o", out, "--model", trained, *(("--floor-db", floor) if floor else ()))
        outs[floor] = sf.read(out, dtype="float32")[0]
    assert np.abs(outs["0"] - x).max() < 1e-4
    energy = {k: float(np.sum(v ** 2)) for k, v in outs.items()}
    assert energy[None] < energy["-12"] < energy["0"]
    model = load_model(trained)
    model.config.floor_db = -12.0
    assert np.abs(denoise.denoise_array(model, x[None], 16000)[0] - outs["-12"]).max() < 1e-6
    assert digest(trained) == before
    with pytest.raises(SystemExit):
        denoise.parse_args(["a.wav", "--floor-db", "6"])


@pytest.mark.parametrize("subtraction", ["magnitude", "complex"])
def test_plot_shows_the_predicted_noise(trained, subtraction):
    """--plot's middle panel is |N|, the noise the model subtracts: never above the input, for both kinds of model,
    and where it is close to the input the output is far below it."""
    from unet import ModelConfig, NoiseSubtractionDenoiser
    model = load_model(trained) if subtraction == "magnitude" else \
        NoiseSubtractionDenoiser(ModelConfig(base_channels=4, depth=2, subtraction="complex")).eval()
    rng = np.random.default_rng(4)
    noisy = (voiced(2.0, 16000, 120, rng) + noise_clip("hiss", 2.0, 16000, rng)).astype(np.float32)
    rms = denoise.recording_rms(lambda a, b: noisy[None, a:b], len(noisy))[0]
    noisy_db, noise_db, clean_db = denoise.plot_images(denoise.as_runner(model), noisy, rms)
    assert noisy_db.shape == noise_db.shape == clean_db.shape
    assert np.all(noise_db <= noisy_db + 0.01)
    if subtraction == "magnitude":  # |S| = max(|Y| - |N|, floor |Y|): most of a bin predicted as noise leaves little
        mostly_noise = noise_db > noisy_db - 1.0
        assert mostly_noise.any() and np.median((noisy_db - clean_db)[mostly_noise]) > 6
