"""dataset.py's batched mixing (DeviceRemixer): the mixtures RemixDataset draws, a whole batch at a time."""
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter
from scipy.stats import ks_2samp

from dataset import PHASES, DeviceRemixer, RemixDataset, audio_bank, batch_eq, batch_mix, sinc_read


def snr_and_level(noisy, voice):
    """Each mixture's SNR and RMS level (dB), its voice-silent crops left out."""
    noisy, voice = np.asarray(noisy, np.float64), np.asarray(voice, np.float64)
    keep = np.abs(voice).max(1) > 1e-5
    noisy, voice = noisy[keep], voice[keep]
    power = lambda x: np.mean(x ** 2, 1)
    return 10 * np.log10(power(voice) / power(noisy - voice)), 10 * np.log10(power(noisy))


def test_device_mixtures_match_the_loader_ones(prepared):
    """Same SNR and level distributions, voices drawn from the same files, with every augmentation on."""
    ds = RemixDataset(prepared, "train", 1.0, (-5, 15), (-40, -10), seed=3, eq_prob=0.5, noise_mix_prob=0.5, speed_prob=0.5)
    remixer = DeviceRemixer(ds, "cpu")
    items = np.tile(np.arange(len(ds)), 40)
    loader = []
    for epoch in range(40):  # RemixDataset draws from (seed, epoch, item): 40 epochs, 40 mixtures of each voice
        ds.set_epoch(epoch)
        loader += [ds[i] for i in range(len(ds))]
    ds_noisy, ds_voice = (torch.stack(x).numpy() for x in zip(*loader))
    dev = [remixer.batch(items[k:k + 32].tolist(), 0, k) for k in range(0, len(items), 32)]
    dev_noisy, dev_voice = (torch.cat(x).numpy() for x in zip(*dev))
    assert dev_noisy.shape == ds_noisy.shape and dev_noisy.dtype == np.float32
    for a, b, name in zip(snr_and_level(ds_noisy, ds_voice), snr_and_level(dev_noisy, dev_voice), ("SNR", "level")):
        assert len(b) > 0.9 * len(items)
        assert ks_2samp(a, b).pvalue > 0.01, name  # the same distribution
        assert np.percentile(b, [5, 50, 95]) == pytest.approx(np.percentile(a, [5, 50, 95]), abs=1.5), name
    assert np.abs(dev_noisy).max() <= 0.99 + 1e-6
    # drawn from (seed, epoch, batch): the same batch again, another for another epoch
    assert torch.equal(remixer.batch([0, 1], 0, 0)[0], remixer.batch([0, 1], 0, 0)[0])
    assert not torch.equal(remixer.batch([0, 1], 0, 0)[0], remixer.batch([0, 1], 1, 0)[0])


def test_sinc_read_copies_at_speed_one_and_resamples_cleanly():
    sr, n = 16000, 4000
    t = np.arange(3 * n)
    x = torch.tensor(np.sin(2 * np.pi * 440 / sr * t), dtype=torch.float32)
    audio = torch.cat([x[-8:], x, x[:8]])  # audio_bank's layout: TAPS samples of pre-roll
    offset, start = torch.zeros(3, dtype=torch.long), torch.tensor([0.0, 100.0, 37.0], dtype=torch.float64)
    speed = torch.tensor([1.0, 1.07, 0.93], dtype=torch.float64)
    out = sinc_read(audio, offset, start, speed, n).double().numpy()
    assert np.array_equal(out[0], audio[8:8 + n].numpy())
    for row, s, x0 in ((1, 1.07, 100.0), (2, 0.93, 37.0)):  # a 440 Hz tone read at speed s: 440 s Hz
        want = np.sin(2 * np.pi * 440 / sr * (x0 + s * np.arange(n)))
        err = 10 * np.log10(np.mean((out[row] - want) ** 2) / np.mean(want ** 2))
        assert err < -50, (s, err)
    assert PHASES >= 256


def test_batch_eq_is_the_recursive_filter_and_batch_mix_sets_snr_and_level():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4000)).astype(np.float32)
    u = rng.uniform(size=(3, 4))
    out = batch_eq(torch.from_numpy(x), torch.from_numpy(u)).numpy()
    taps = (u - 0.5) * 0.75
    for i in range(3):
        want = lfilter(np.r_[1, taps[i, :2]], np.r_[1, taps[i, 2:]], x[i])
        assert np.abs(out[i] - want).max() < 1e-4 * np.abs(want).max()
    voice, noise = torch.from_numpy(x[:, :2000]) * 0.1, torch.from_numpy(x[:, 2000:])
    voice[2] = 0  # a silent voice crop: noise alone in, silence as the target
    noisy, target = batch_mix(voice, noise, torch.tensor([0.0, 10.0, 5.0]), torch.tensor([-20.0, -30.0, -25.0]))
    snr, level = snr_and_level(noisy[:2], target[:2])
    assert snr == pytest.approx([0.0, 10.0], abs=1e-3) and level == pytest.approx([-20.0, -30.0], abs=1e-3)
    assert torch.equal(noisy[2], noise[2]) and not target[2].any()


def test_audio_bank_holds_files_of_any_length_at_their_own_size(tmp_path):
    """Each file once (a short one repeated until the longest read fits), not padded to the longest: a set with
    one long noise recording would otherwise take its length for every file. Reads loop a short file."""
    rng = np.random.default_rng(0)
    files = {"short.wav": rng.standard_normal(100), "long.wav": rng.standard_normal(50_000)}
    for name, x in files.items():
        sf.write(tmp_path / name, x.astype(np.float32), 16000, subtype="FLOAT")
    audio, offset, length = audio_bank([tmp_path / n for n in files], 300, "cpu", "test")
    assert length.tolist() == [100, 50_000] and offset.tolist() == [0, 8 + 400 + 8 + 1]
    assert len(audio) == (8 + 400 + 8 + 1) + (8 + 50_000 + 8 + 1)
    for row, x in enumerate(files.values()):
        start = torch.tensor([0.0, 70.0], dtype=torch.float64)
        out = sinc_read(audio, offset[[row, row]], start, torch.ones(2, dtype=torch.float64), 300).numpy()
        want = np.resize(x, 370).astype(np.float32)
        assert np.array_equal(out[0], want[:300]) and np.array_equal(out[1], want[70:370])
