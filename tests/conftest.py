"""Shared fixtures: a tiny generated corpus (no downloads, no ../shared) and a set prepared from it."""
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 16000


def voiced(seconds, sr, f0, rng):
    """A speech-like test signal: a harmonic series with a wandering pitch and syllable envelope."""
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12) if k * f0 < sr / 2.5)
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6)), 0, None) ** 0.5
    return (0.3 * x * envelope / np.abs(x).max()).astype(np.float32)


def noise_clip(kind, seconds, sr, rng):
    n = int(seconds * sr)
    if kind == "hiss":
        x = rng.standard_normal(n)
    else:  # a hiss band above the voice, 3-7 kHz, that swells and fades
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / sr)
        x = np.fft.irfft(spec * ((f > 3000) & (f < 7000)), n) * (1.2 + np.sin(2 * np.pi * 0.7 * np.arange(n) / sr))
    return (0.1 * x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def make_corpus(root, n_speakers=6, files_per_speaker=3, seconds=3.0, noise_files=3, sr=SR):
    rng = np.random.default_rng(0)
    for s in range(n_speakers):
        (root / "speech" / f"spk{s}").mkdir(parents=True)
        for f in range(files_per_speaker):
            # each speaker's files at low, middle and high pitch, so that no split is left to extrapolate in pitch
            f0 = 100 + 40 * ((s + 2 * f) % 6)
            sf.write(root / "speech" / f"spk{s}" / f"utt{f}.wav", voiced(seconds, sr, f0, rng), sr)
    for kind in ("hiss", "band"):
        (root / "noise" / kind).mkdir(parents=True)
        for f in range(noise_files):
            sf.write(root / "noise" / kind / f"{kind}{f}.wav", noise_clip(kind, 3.0, sr, rng), sr)
    return root / "speech", root / "noise"


def prepare_args(speech, noise, out, *extra):
    return ["--speech-dir", str(speech), "--noise-dir", str(noise), "--out", str(out), "--clip-seconds", "1.0",
            "--workers", "1", "--val-fraction", "0.25", "--test-fraction", "0.25", *extra]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def prepared(corpus, tmp_path_factory):
    import prepare_data
    out = tmp_path_factory.mktemp("prepared") / "processed"
    prepare_data.main(prepare_args(*corpus, out))
    return out


TINY_MODEL = ["--base-channels", "8", "--depth", "2", "--segment-seconds", "1", "--batch-size", "4", "--lr", "3e-3"]


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory):
    """A tiny model trained for 10 epochs on the tiny set (about 15 s on a laptop CPU)."""
    import train
    out = tmp_path_factory.mktemp("model") / "unet.pt"
    train.main(["--data-dir", str(prepared), "--out", str(out), "--epochs", "10", *TINY_MODEL])
    return out


@pytest.fixture(scope="session")
def trained_bands(prepared, tmp_path_factory):
    """A tiny band U-Net (--arch bands) trained for 6 epochs on the tiny set."""
    import train
    out = tmp_path_factory.mktemp("model_bands") / "unet.pt"
    train.main(["--data-dir", str(prepared), "--out", str(out), "--epochs", "6", "--arch", "bands", "--base-channels", "4",
                "--temporal-blocks", "2", "--segment-seconds", "1", "--batch-size", "4", "--lr", "3e-3"])
    return out
