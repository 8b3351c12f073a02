"""prepare_data.py: layout, exact sums, SNRs to 0.1 dB, splits by source, reproducibility, refusals."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf

import prepare_data
from audio import AudioConfig, UserError, load_png, snr_db, spectrogram_db
from conftest import prepare_args

KINDS = ("noisy_voice", "voice", "noise")


def rows(out):
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_sums_and_snr(prepared):
    manifest = rows(prepared)
    assert {"id", "split", "speech_source", "noise_source", "noise_category", "snr_db"} <= set(manifest[0])
    assert {r["split"] for r in manifest} == {"train", "val", "test"}
    for r in manifest:
        files = {k: prepared / r["split"] / k / f"{r['id']}.wav" for k in KINDS}
        (noisy, sr), (voice, _), (noise, _) = (sf.read(files[k], dtype="float32") for k in KINDS)
        assert sr == 16000 and len(noisy) == 16000
        assert np.array_equal(noisy, voice + noise)
        assert snr_db(voice, noise) == pytest.approx(float(r["snr_db"]), abs=0.1)
        assert -5 <= float(r["snr_db"]) <= 15
        assert np.abs(noisy).max() <= 0.99
        for k in KINDS:
            assert (prepared / r["split"] / k / f"{r['id']}.png").exists()


def test_png_matches_wav(prepared):
    cfg = AudioConfig()
    r = rows(prepared)[0]
    x, _ = sf.read(prepared / r["split"] / "noisy_voice" / f"{r['id']}.wav", dtype="float32")
    png = load_png(prepared / r["split"] / "noisy_voice" / f"{r['id']}.png", cfg)
    assert png.shape == (256, 16000 // 128 + 1)
    assert np.abs(png - spectrogram_db(x, cfg)).max() < 0.01


def test_splits_disjoint_by_speaker_and_noise_recording(prepared):
    manifest = rows(prepared)
    for field in ("speaker", "speech_source", "noise_source"):
        sets = {s: {r[field] for r in manifest if r["split"] == s} for s in ("train", "val", "test")}
        assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"], field
    config = json.loads((prepared / "config.json").read_text())
    assert config["audio"]["sample_rate"] == 16000 and config["seed"] == 0


def test_reproducible_and_resumable(corpus, prepared, tmp_path):
    """Same seed: identical audio. A run interrupted (files deleted, manifest gone) completes to the same set.

    (Bytes can differ: libsndfile stamps float WAVs with the time in a PEAK chunk.)"""
    same = lambda a, b: np.array_equal(sf.read(a)[0], sf.read(b)[0])
    out = tmp_path / "again"
    prepare_data.main(prepare_args(*corpus, out))
    for r in rows(prepared):
        for k in KINDS:
            assert same(prepared / r["split"] / k / f"{r['id']}.wav", out / r["split"] / k / f"{r['id']}.wav")
            png = f"{r['split']}/{k}/{r['id']}.png"
            assert (prepared / png).read_bytes() == (out / png).read_bytes()
    assert (out / "manifest.csv").read_text() == (prepared / "manifest.csv").read_text()
    victim = out / "train" / "voice" / "train_00000.wav"
    victim.unlink()
    (out / "manifest.csv").unlink()
    prepare_data.main(prepare_args(*corpus, out))
    assert same(victim, prepared / "train" / "voice" / "train_00000.wav")
    assert (out / "manifest.csv").read_text() == (prepared / "manifest.csv").read_text()


def test_refuses_other_settings_without_overwrite(corpus, tmp_path):
    out = tmp_path / "p"
    prepare_data.main(prepare_args(*corpus, out))
    with pytest.raises(UserError, match="other settings.*snr_range"):
        prepare_data.main(prepare_args(*corpus, out, "--snr-range", "0", "5"))
    prepare_data.main(prepare_args(*corpus, out, "--snr-range", "0", "5", "--overwrite"))
    assert all(0 <= float(r["snr_db"]) <= 5 for r in rows(out))


def test_vad_drops_silent_chunks(tmp_path):
    speech = tmp_path / "speech" / "a"
    speech.mkdir(parents=True)
    x = np.zeros(16000 * 4, np.float32)
    x[:16000] = 0.3 * np.sin(np.arange(16000) * 0.2)  # one second of 'speech', three of silence
    sf.write(speech / "r.wav", x, 16000)
    args = prepare_data.parse_args(["--clip-seconds", "1"])
    assert prepare_data.speech_chunks(speech / "r.wav", args) == [0]


def test_bad_input_errors(tmp_path, corpus):
    with pytest.raises(UserError, match="not a folder"):
        prepare_data.main(["--speech-dir", str(tmp_path / "nope"), "--noise-dir", str(corpus[1])])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        prepare_data.main(["--speech-dir", str(tmp_path / "empty"), "--noise-dir", str(corpus[1])])
    with pytest.raises(SystemExit):
        prepare_data.parse_args(["--snr-range", "10", "0"])
