"""
Datasets over a prepared set (see prepare_data.py for the layout).

- MixtureDataset: the fixed mixtures of one split, read from their WAVs. Validation and
  testing use these, so every epoch is judged on the same inputs.
- RemixDataset: on-the-fly remixing for training. Each item pairs a clean voice chunk with
  a random noise chunk of the same split at a fresh SNR, level and offset, drawn from
  (seed, epoch, index): every epoch sees new mixtures, and a resumed run sees the same
  ones an uninterrupted run would have. With eq_prob > 0, voice and noise each pass, with that
  probability, through their own random second-order filter before mixing (RNNoise's trick for
  unseen microphones and rooms): the target is the filtered voice. With noise weights, the noise
  is drawn by noise corpus (the first folder of the manifest's noise_source) rather than evenly. With
  noise_mix_prob > 0, that share of the mixtures carry two noise recordings at once, the second within
  5 dB of the first (as DNS-challenge training mixes), so that a few minutes of noise make many more scenes.
  With speed_prob > 0, the voice and each noise are, with that chance, played up to 10% faster or slower
  (resampled: pitch and formants move with the speed), so that a few hundred voices sound like more.
Items are (noisy, voice) float32 tensors of shape [samples].
"""
import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import lfilter
from torch.utils.data import Dataset

from audio import AudioConfig, UserError, mix, resample, rms


def read_manifest(root, split=None):
    path = Path(root) / "manifest.csv"
    if not path.exists():
        raise UserError(f"no prepared set at {root} (missing manifest.csv): run python prepare_data.py first")
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if split is None or r["split"] == split]
    return rows


def read_wav(path):
    x, _ = sf.read(path, dtype="float32")
    return x


class MixtureDataset(Dataset):
    def __init__(self, root, split):
        self.root, self.rows = Path(root), read_manifest(root, split)
        if not self.rows:
            raise UserError(f"the {split} split of {root} is empty")

    def __len__(self):
        return len(self.rows)

    def path(self, i, kind):
        r = self.rows[i]
        return self.root / r["split"] / kind / f"{r['id']}.wav"

    def __getitem__(self, i):
        return torch.from_numpy(read_wav(self.path(i, "noisy_voice"))), torch.from_numpy(read_wav(self.path(i, "voice")))


def noise_corpus(noise_source):
    """The noise corpus of a manifest's noise_source: its first folder (each --noise-dir's name when
    prepare_data.py was given several, else a folder inside the one); "" for a file at the top."""
    return noise_source.split("/")[0] if "/" in noise_source else ""


def per_item_weights(labels, weights, what):
    """Sampling weights of items labelled `labels` from {label: weight} (labels not named weigh 1), summing to 1."""
    unknown = set(weights) - set(labels)
    if unknown:
        raise UserError(f"no {what} {', '.join(sorted(unknown))} in this set; it has: "
                        f"{', '.join(sorted(set(labels))) or '(none named)'}")
    w = np.array([weights.get(c, 1.0) for c in labels], dtype=np.float64)
    if not w.sum() > 0:
        raise UserError(f"the {what} weights leave nothing to draw")
    return w / w.sum()


NOISE_MIX_DB = 5.0  # the second noise of a pair lies within this many dB of the first
SPEED_SPREAD = 0.1  # speed changes reach this fraction faster or slower


def random_eq(x, rng):
    """x through a random stable second-order filter, (1 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2) with every
    tap in [-3/8, 3/8] as in RNNoise's training: a tilt or bump of up to about 17 dB."""
    b, a = np.r_[1.0, rng.uniform(-0.375, 0.375, 2)], np.r_[1.0, rng.uniform(-0.375, 0.375, 2)]
    return lfilter(b, a, x).astype(np.float32)


class RemixDataset(Dataset):
    def __init__(self, root, split="train", segment_seconds=2.0, snr_range=(-5, 15), level_range=(-35, -15),
                 seed=0, sample_rate=AudioConfig.sample_rate, eq_prob=0.0, noise_mix_prob=0.0, speed_prob=0.0):
        fixed = MixtureDataset(root, split)
        self.voices = [fixed.path(i, "voice") for i in range(len(fixed))]
        self.corpora = [r.get("corpus") or "" for r in fixed.rows]  # sets made before corpora were named: ""
        self.noises = [fixed.path(i, "noise") for i in range(len(fixed))]
        self.noise_corpora = [noise_corpus(r.get("noise_source") or "") for r in fixed.rows]
        self.noise_cdf = None  # drawn evenly; set_noise_weights draws them by corpus
        self.segment, self.sample_rate = round(segment_seconds * sample_rate), sample_rate
        self.snr_range, self.level_range, self.seed, self.epoch = snr_range, level_range, seed, 0
        self.eq_prob, self.noise_mix_prob, self.speed_prob = eq_prob, noise_mix_prob, speed_prob

    def set_epoch(self, epoch):
        self.epoch = epoch

    def corpus_weights(self, weights):
        """Per-voice sampling weights from {corpus: weight} (corpora not named weigh 1), normalised to sum 1."""
        return per_item_weights(self.corpora, weights, "corpus")

    def set_noise_weights(self, weights):
        """Draw each mixture's noise by {noise corpus: weight} (corpora not named weigh 1); returns the weights."""
        w = per_item_weights(self.noise_corpora, weights, "noise corpus")
        self.noise_cdf = np.cumsum(w)
        return w

    def __len__(self):
        return len(self.voices)

    def crop(self, x, rng, speed=1.0):
        """A segment-long crop of x; at speed != 1 a crop of segment * speed samples resampled to the segment."""
        n = round(self.segment * speed)
        if len(x) < n:
            x = np.tile(x, n // len(x) + 1)
        start = rng.integers(len(x) - n + 1)
        x = x[start:start + n]
        if speed != 1.0:
            x = resample(x, round(self.sample_rate * speed), self.sample_rate)
            x = np.pad(x, (0, max(0, self.segment - len(x))))[:self.segment].astype(np.float32)
        return x

    def speed(self, rng):
        """1, or with speed_prob's chance a speed within SPEED_SPREAD of 1 (rng: this item's own stream, None without)."""
        return rng.uniform(1 - SPEED_SPREAD, 1 + SPEED_SPREAD) if rng is not None and rng.random() < self.speed_prob else 1.0

    def draw_noise(self, rng, speed=1.0):
        """A noise crop, drawn evenly or by corpus weight (a crop of pure silence cannot be mixed at an SNR: draw again)."""
        for _ in range(10):
            j = rng.integers(len(self.noises)) if self.noise_cdf is None else \
                min(np.searchsorted(self.noise_cdf, rng.random() * self.noise_cdf[-1], side="right"), len(self.noises) - 1)
            noise = self.crop(read_wav(self.noises[j]), rng, speed)
            if np.abs(noise).max() > 1e-5:
                break
        return noise

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        speed_rng = np.random.default_rng([self.seed, self.epoch, i, 3]) if self.speed_prob > 0 else None
        voice = self.crop(read_wav(self.voices[i]), rng, self.speed(speed_rng))
        noise = self.draw_noise(rng, self.speed(speed_rng))
        if self.noise_mix_prob > 0:  # its own stream, so the draws above and below are those of a run without it
            mix_rng = np.random.default_rng([self.seed, self.epoch, i, 2])
            if mix_rng.random() < self.noise_mix_prob:
                second = self.draw_noise(mix_rng, self.speed(speed_rng))
                gain = rms(noise) / max(rms(second), 1e-8) * 10 ** (mix_rng.uniform(-NOISE_MIX_DB, NOISE_MIX_DB) / 20)
                noise = (noise + gain * second).astype(np.float32)
        if self.eq_prob > 0:  # its own stream, so the draws above are those of a run without it
            eq_rng = np.random.default_rng([self.seed, self.epoch, i, 1])
            voice, noise = (random_eq(x, eq_rng) if eq_rng.random() < self.eq_prob else x for x in (voice, noise))
        if np.abs(voice).max() < 1e-5:  # a silent voice crop: the target is silence, noise alone is the input
            noisy, voice = noise.astype(np.float32), np.zeros_like(voice)
        else:
            noisy, voice, _ = mix(voice, noise, rng.uniform(*self.snr_range), rng.uniform(*self.level_range))
        return torch.from_numpy(noisy), torch.from_numpy(voice)
