"""Tests for demo_corpus.py: the offline synthetic Hindi speech + procedural noise corpus."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import demo_corpus as dc

SR = 16000
needs_espeak = pytest.mark.skipif(not dc.have_espeak(), reason="espeakng-loader not usable here")


def centroid(y, sr=SR):
    power = np.abs(np.fft.rfft(y)) ** 2
    return float(np.sum(power * np.fft.rfftfreq(len(y), 1 / sr)) / np.sum(power))


def frame_rms(y, hop=400):
    return np.sqrt((y[: len(y) // hop * hop].reshape(-1, hop) ** 2).mean(1))


def test_sentences_are_hindi_and_sized():
    assert len(dc.DEMO_SENTENCES) >= 40
    assert len(set(dc.DEMO_SENTENCES)) == len(dc.DEMO_SENTENCES)
    for s in dc.DEMO_SENTENCES:
        assert 6 <= len(s.split()) <= 15, s
        assert sum("\u0900" <= ch <= "\u097f" for ch in s) > 0.6 * len(s.replace(" ", "")), s


@pytest.mark.parametrize("sr", [8000, 16000])
@pytest.mark.parametrize("family", dc.NOISE_FAMILIES)
def test_noise_family_is_sane_and_deterministic(family, sr):
    y = dc.synth_noise(family, 1.5, sr, np.random.default_rng([7, 1]))
    assert y.dtype == np.float32 and y.shape == (int(1.5 * sr),)
    assert np.isfinite(y).all()
    assert np.abs(y).max() < 1.0
    rms = np.sqrt(np.mean(y.astype(np.float64) ** 2))
    assert 0.015 < rms < 0.11  # ~0.1, lower only where peak-limiting impulsive sounds
    assert (frame_rms(y) > 1e-4).mean() > 0.9  # sounds almost everywhere, not a few blips
    assert np.array_equal(y, dc.synth_noise(family, 1.5, sr, np.random.default_rng([7, 1])))
    assert not np.allclose(y, dc.synth_noise(family, 1.5, sr, np.random.default_rng([8, 1])))


def test_unknown_family_raises():
    with pytest.raises(ValueError):
        dc.synth_noise("thunderstorm", 1.0, SR, np.random.default_rng(0))


def test_families_differ():
    clips = {f: [dc.synth_noise(f, 2.0, SR, np.random.default_rng([s, 3])) for s in range(3)]
             for f in dc.NOISE_FAMILIES}
    c = {f: np.mean([centroid(y) for y in ys]) for f, ys in clips.items()}
    assert c["hum"] < c["white_hiss"] / 5
    assert c["pink_hiss"] < c["white_hiss"] / 2
    assert c["engine"] < c["rain"] / 4

    def crest(f):
        return np.mean([np.abs(y).max() / np.sqrt(np.mean(y ** 2)) for y in clips[f]])
    assert crest("keyboard") > 3 * crest("white_hiss")  # sparse clicks vs steady hiss

    def variation(f):  # how much the level moves from frame to frame
        return np.mean([frame_rms(y).std() / frame_rms(y).mean() for y in clips[f]])
    for f in ("babble", "traffic", "wind", "keyboard"):
        assert variation(f) > 2 * variation("white_hiss"), f

    # the siren is a tone: its strongest bin towers over the median bin
    spec = np.abs(np.fft.rfft(clips["siren"][0][:4096]))
    assert spec.max() > 50 * np.median(spec)


def test_procedural_speech_deterministic_and_plausible():
    spk_m, spk_f = dc.SPEAKERS[0], dc.SPEAKERS[1]
    text = dc.DEMO_SENTENCES[3]
    y = dc.synth_speech(text, spk_m, SR, engine="procedural")
    assert y.dtype == np.float32 and np.isfinite(y).all()
    assert 1.5 < len(y) / SR < 10
    assert abs(np.abs(y).max() - 0.5) < 1e-3
    assert np.array_equal(y, dc.synth_speech(text, spk_m, SR, engine="procedural"))
    assert not np.array_equal(y[:1000], dc.synth_speech(text, spk_f, SR, engine="procedural")[:1000])
    slow = dc.synth_speech(text, dict(spk_m, rate=130), SR, engine="procedural")
    fast = dc.synth_speech(text, dict(spk_m, rate=190), SR, engine="procedural")
    assert len(slow) > 1.2 * len(fast)


def test_unknown_engine_raises():
    with pytest.raises(ValueError):
        dc.synth_speech("नमस्ते दुनिया", dc.SPEAKERS[0], SR, engine="festival")


@needs_espeak
def test_espeak_speech_plausible_and_deterministic():
    text = dc.DEMO_SENTENCES[0]  # 12 words
    outs = {}
    for spk in dc.SPEAKERS:
        y = dc.synth_speech(text, spk, SR)
        assert y.dtype == np.float32 and np.isfinite(y).all()
        assert 2.0 < len(y) / SR < 8.0, spk
        assert abs(np.abs(y).max() - 0.5) < 1e-3
        assert (frame_rms(y) > 0.01).mean() > 0.5, spk  # mostly speech, not silence
        outs[spk["voice"]] = y
    # libespeak-ng keeps state between utterances; synth_speech must hide that
    again = dc.synth_speech(text, dc.SPEAKERS[0], SR)
    assert np.array_equal(again, outs[dc.SPEAKERS[0]["voice"]])
    # every speaker sounds different
    keys = list(outs)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            a, b = outs[keys[i]], outs[keys[j]]
            assert len(a) != len(b) or not np.array_equal(a, b)
    slow = dc.synth_speech(text, dict(dc.SPEAKERS[0], rate=130), SR)
    fast = dc.synth_speech(text, dict(dc.SPEAKERS[0], rate=190), SR)
    assert len(slow) > 1.2 * len(fast)


@needs_espeak
def test_espeak_speech_same_in_a_fresh_process():
    text, spk = dc.DEMO_SENTENCES[5], dc.SPEAKERS[3]
    here = hashlib.md5(dc.synth_speech(text, spk, SR).tobytes()).hexdigest()
    code = ("import hashlib, demo_corpus as dc; "
            f"print(hashlib.md5(dc.synth_speech(dc.DEMO_SENTENCES[5], dc.SPEAKERS[3], {SR}).tobytes()).hexdigest())")
    root = Path(dc.__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == here


def _tree(root: Path):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


TINY = dict(n_speakers=2, sentences_per_speaker=3, noise_clips_per_family=1, noise_seconds=1.0, progress=False)


def test_build_is_deterministic_and_complete(tmp_path):
    s1 = dc.build_demo_corpus(tmp_path / "a", sr=SR, seed=3, **TINY)
    s2 = dc.build_demo_corpus(tmp_path / "b", sr=SR, seed=3, **TINY)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    assert not any(k.endswith(".tmp") for k in a)  # atomic writes left nothing behind

    root = tmp_path / "a"
    spk_dirs = sorted(p.name for p in (root / "speech").iterdir())
    assert spk_dirs == ["demo_spk0", "demo_spk1"]
    speech = sorted((root / "speech").rglob("*.wav"))
    assert len(speech) == s1["n_speech_files"] == s2["n_speech_files"]
    total = 0.0
    for p in speech:
        assert p.name.startswith(p.parent.name + "_")
        y, sr = sf.read(p)
        assert sr == SR and y.ndim == 1 and sf.info(p).subtype == "PCM_16"
        assert 1.5 < len(y) / sr <= 10.5
        assert np.abs(y).max() > 0.3
        total += len(y) / sr
    assert abs(total - s1["speech_seconds"]) < 0.1

    assert sorted(p.name for p in (root / "noise").iterdir()) == sorted(dc.NOISE_FAMILIES)
    noise = sorted((root / "noise").rglob("*.wav"))
    assert len(noise) == len(dc.NOISE_FAMILIES) == s1["n_noise_files"]
    for p in noise:
        y, sr = sf.read(p)
        assert sr == SR and len(y) == SR and np.isfinite(y).all() and np.abs(y).max() > 0.01
        assert p.name == f"{p.parent.name}_000.wav"

    readme = (root / "DEMO_CORPUS.txt").read_text(encoding="utf-8")
    assert "GPL-3.0" in readme and "--speech-dir" in readme and "synthetic" in readme.lower()
    assert s1["synthesiser"] in readme


def test_noise_clips_do_not_depend_on_clip_count(tmp_path):
    few = dict(TINY, n_speakers=1, sentences_per_speaker=1, engine="procedural")
    dc.build_demo_corpus(tmp_path / "one", seed=1, **few)
    dc.build_demo_corpus(tmp_path / "two", seed=1, **dict(few, noise_clips_per_family=2))
    for f in dc.NOISE_FAMILIES:
        rel = f"noise/{f}/{f}_000.wav"
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
    assert len(list((tmp_path / "two" / "noise").rglob("*.wav"))) == 2 * len(dc.NOISE_FAMILIES)


def test_fallback_when_espeak_is_missing(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dc, "_espeak", False)  # as if the wheel failed to load
    assert not dc.have_espeak()
    with pytest.raises(RuntimeError):
        dc.synth_speech(dc.DEMO_SENTENCES[0], dc.SPEAKERS[0], SR, engine="espeak")
    s = dc.build_demo_corpus(tmp_path, sr=SR, seed=0, **TINY)
    assert s["synthesiser"].startswith("procedural") and "procedural" in caplog.text
    speech = list((tmp_path / "speech").rglob("*.wav"))
    assert len(speech) == s["n_speech_files"] >= 2
    for p in speech:
        y, sr = sf.read(p)
        assert sr == SR and 1.5 < len(y) / sr <= 10.5 and np.abs(y).max() > 0.3
