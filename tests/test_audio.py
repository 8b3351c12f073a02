"""audio.py: STFT round trip, the fixed dB scale, 16-bit PNGs, mixing at an SNR, loading."""
import numpy as np
import pytest
import torch

from audio import (AudioConfig, UserError, db_to_magnitude, istft, load_audio, load_png, magnitude_to_db, mix,
                   save_png, si_sdr, snr_db, spectrogram_db, stft, write_audio)

CFG = AudioConfig()


@pytest.mark.parametrize("n", [16000, 16001, 777, 100])
def test_stft_round_trip(n):
    x = torch.randn(2, n)
    spec = stft(x, CFG)
    assert spec.shape == (2, CFG.n_fft // 2 + 1, n // CFG.hop_length + 1)
    assert torch.allclose(istft(spec, CFG, n), x, atol=1e-5)


def test_db_scale_is_absolute():
    """A full-scale sine reads 0 dB at its bin; halving the level reads -6.02 dB: no per-image scaling."""
    t = np.arange(16000) / 16000
    f = 1000.0  # exactly on bin 32 at n_fft 512
    for amp, want in ((1.0, 0.0), (0.5, -6.02), (0.01, -40.0)):
        db = spectrogram_db(amp * np.sin(2 * np.pi * f * t), CFG)
        assert db.shape[0] == 256
        assert db[32, 10:-10].mean() == pytest.approx(want, abs=0.05)
    assert spectrogram_db(np.zeros(4000), CFG).max() == CFG.db_min
    mag = np.array([1e-9, 1.0, 100.0])
    assert np.allclose(db_to_magnitude(magnitude_to_db(mag, CFG), CFG)[1:], mag[1:])


def test_png_round_trip_within_001_db(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    db = rng.uniform(CFG.db_min, CFG.db_max, size=(256, 77))
    db[0, :] = -90.0  # lowest frequency row
    save_png(db, tmp_path / "s.png", CFG)
    with Image.open(tmp_path / "s.png") as im:
        assert im.mode in ("I;16", "I;16B", "I") and im.size == (77, 256)
        assert np.asarray(im)[-1, 0] == round((-90 - CFG.db_min) / 120 * 65535)  # low frequencies at the bottom
    back = load_png(tmp_path / "s.png", CFG)
    assert back.shape == db.shape
    assert np.abs(back - db).max() < 0.01


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.3, 15.0])
def test_mix_hits_snr_and_sums(snr):
    rng = np.random.default_rng(1)
    v, n = rng.standard_normal(8000), rng.standard_normal(8000) * 3
    noisy, voice, noise = mix(v, n, snr, -20.0)
    assert noisy.dtype == np.float32
    assert np.array_equal(noisy, voice + noise)
    assert snr_db(voice, noise) == pytest.approx(snr, abs=0.01)
    assert np.abs(noisy).max() <= 0.99


def test_si_sdr_is_scale_invariant():
    ref = torch.randn(1000)
    assert si_sdr(3 * ref, ref) > 60
    noisy = ref + 0.1 * torch.randn(1000)
    assert si_sdr(noisy * 0.2, ref) == pytest.approx(si_sdr(noisy, ref).item(), abs=1e-3)
    assert 18 < si_sdr(noisy, ref) < 22


def test_write_and_load_resample(tmp_path):
    x = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100).astype(np.float32)
    write_audio(tmp_path / "a.wav", np.stack([x, -x]), 44100)
    audio, sr = load_audio(tmp_path / "a.wav", sr=16000, mono=False)
    assert sr == 16000 and audio.shape == (2, 16000)
    mono, _ = load_audio(tmp_path / "a.wav", mono=True)
    assert mono.shape == (1, 44100) and np.abs(mono).max() < 1e-6
    assert not list(tmp_path.glob("*.tmp"))


def test_load_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(UserError, match="cannot read audio from .*text.wav"):
        load_audio(tmp_path / "text.wav")


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 44101])
@pytest.mark.parametrize("sr_in, sr_out", [(44100, 16000), (8000, 16000), (48000, 16000)])
def test_resample_matches_librosa_even_for_a_sample_or_two(n, sr_in, sr_out):
    import librosa
    from audio import resample
    x = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
    expected = librosa.resample(x, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq", axis=-1)
    got = resample(x, sr_in, sr_out)
    assert got.shape == expected.shape and got.shape[1] >= 1 and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-6)
