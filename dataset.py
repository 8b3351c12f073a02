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
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch
from scipy.signal import lfilter
from torch.utils.data import Dataset
from tqdm import tqdm

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



# ----------------------------------------------------------------------------- the same mixtures, a batch at a time
TAPS = 8  # sinc_read's interpolation taps a side
PHASES = 512  # sinc_read's fractional positions, in steps of 1/PHASES sample


class Bank(NamedTuple):
    """audio_bank's files on a device: their audio end to end, where each one's row starts in it, their lengths."""
    audio: torch.Tensor
    offset: torch.Tensor
    length: torch.Tensor


def audio_bank(paths, longest_read, device, desc):
    """The audio of paths end to end in one flat tensor on device, each file looped from TAPS samples before its
    start to TAPS after the end of any read of up to `longest_read` samples from a start within it (a file shorter
    than that repeated until one fits), so that no read wraps; and each file's offset in it and its length. Files
    of any lengths take about their own size (a tensor [files, longest] would take the longest's for each)."""
    lengths = np.array([sf.info(p).frames for p in paths])
    spans = np.where(lengths >= longest_read, lengths, (longest_read // np.maximum(lengths, 1) + 1) * lengths)
    sizes = TAPS + spans + TAPS + 1
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    audio = np.empty(sizes.sum(), np.float32)  # filled in place: no second copy of the whole bank in memory
    for p, at, size in zip(tqdm(paths, desc=desc, unit="file", leave=False), offsets, sizes):
        audio[at:at + size] = np.resize(np.roll(read_wav(p), TAPS), size)  # np.resize repeats the file to fill
    return Bank(torch.from_numpy(audio).to(device), torch.as_tensor(offsets, device=device),
                torch.as_tensor(lengths, device=device))


class DeviceRemixer:
    """RemixDataset's mixtures, drawn a whole batch at a time from audio held on the device (a GPU's memory, or
    the CPU's) with no per-item Python: the crops, speed changes (band-limited reads, sinc_read), second noises,
    random colouring and the mix at an SNR and level all happen on batched tensors. The distributions are
    RemixDataset's (tests/test_dataset.py compares them); the draws come from (seed, epoch, batch), so a resumed
    run draws what an uninterrupted one would. batch(items, epoch, k) -> (noisy, voice), each [len(items), samples]."""

    def __init__(self, remix, device):
        self.remix, self.device = remix, torch.device(device)
        longest_read = round(remix.segment * (1 + SPEED_SPREAD)) + 1
        self.voices = audio_bank(remix.voices, longest_read, self.device, f"voices to {self.device}")
        self.noises = audio_bank(remix.noises, longest_read, self.device, f"noises to {self.device}")
        self.noise_weights = None if remix.noise_cdf is None else \
            torch.as_tensor(np.diff(remix.noise_cdf, prepend=0), device=self.device)

    def uniform(self, g, n, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(n, generator=g, device=self.device, dtype=torch.float64)

    def speeds(self, g, n):
        """1, or with speed_prob's chance a speed within SPEED_SPREAD of 1, per item."""
        on = self.uniform(g, n) < self.remix.speed_prob
        return torch.where(on, self.uniform(g, n, 1 - SPEED_SPREAD, 1 + SPEED_SPREAD), torch.ones_like(on, dtype=torch.float64))

    def crops(self, bank, items, speed, g):
        """Segment-long crops of bank's files at speed, each from a random start (as RemixDataset.crop, which loops a
        file shorter than the crop)."""
        length = bank.length[items]
        n = torch.round(self.remix.segment * speed).long()
        span = torch.where(length >= n, length - n, (n // length + 1) * length - n)
        start = torch.floor(self.uniform(g, len(items)) * (span + 1))
        return sinc_read(bank.audio, bank.offset[items], start, speed, self.remix.segment)

    def draw_noises(self, speed, g):
        """A noise crop per item, drawn evenly or by corpus weight; crops of pure silence are drawn again (10 tries)."""
        count = len(self.noises.length)
        pick = lambda n: (torch.multinomial(self.noise_weights, n, replacement=True, generator=g)
                          if self.noise_weights is not None else
                          torch.randint(count, (n,), generator=g, device=self.device))
        noise = self.crops(self.noises, pick(len(speed)), speed, g)
        for _ in range(9):
            silent = noise.abs().amax(1) <= 1e-5
            if not silent.any():
                break
            noise[silent] = self.crops(self.noises, pick(int(silent.sum())), speed[silent], g)
        return noise

    def batch(self, items, epoch, k):
        r = self.remix
        g = torch.Generator(self.device).manual_seed(int(np.random.SeedSequence([r.seed, epoch, k]).generate_state(1)[0]))
        items = torch.as_tensor(items, device=self.device)
        n = len(items)
        voice = self.crops(self.voices, items, self.speeds(g, n), g)
        noise = self.draw_noises(self.speeds(g, n), g)
        if r.noise_mix_prob > 0:  # a second noise within NOISE_MIX_DB of the first, in that share of the items
            second = self.draw_noises(self.speeds(g, n), g)
            db = self.uniform(g, n, -NOISE_MIX_DB, NOISE_MIX_DB).float()
            gain = batch_rms(noise) / batch_rms(second).clamp_min(1e-8) * 10 ** (db / 20)
            noise = noise + ((self.uniform(g, n) < r.noise_mix_prob) * gain)[:, None] * second
        if r.eq_prob > 0:  # each of voice and noise through its own random filter, in that share of the items
            voice = torch.where((self.uniform(g, n) < r.eq_prob)[:, None], batch_eq(voice, self.uniform(g, (n, 4))), voice)
            noise = torch.where((self.uniform(g, n) < r.eq_prob)[:, None], batch_eq(noise, self.uniform(g, (n, 4))), noise)
        return batch_mix(voice, noise, self.uniform(g, n, *r.snr_range), self.uniform(g, n, *r.level_range))


def batch_rms(x):
    return x.pow(2).mean(-1).sqrt()


def sinc_read(audio, offset, start, speed, n):
    """n samples of each item's file in an audio_bank (its flat audio, the items' offsets) from position start at
    step speed: a plain copy at speed 1, else band-limited interpolation, a Kaiser-windowed sinc of TAPS taps a side
    with its cut-off lowered to the new Nyquist when reading faster (no aliasing), looked up by fractional position
    in steps of 1/PHASES. [items, n]."""
    pos = TAPS + start[:, None] + speed[:, None] * torch.arange(n, device=audio.device, dtype=torch.float64)
    base = torch.floor(pos).long()
    at = offset[:, None] + base
    out = audio[at]
    moved = speed != 1
    if moved.any():
        phase = ((pos[moved] - base[moved]) * PHASES).round().long()  # [items, n]; PHASES: the next sample, phase 0
        taps = torch.arange(-TAPS + 1, TAPS + 1, device=audio.device)
        d = taps - torch.arange(PHASES + 1, device=audio.device)[:, None] / PHASES
        cutoff = torch.clamp(1 / speed[moved].float(), max=1.0)[:, None, None]
        window = torch.special.i0(6.0 * torch.sqrt(torch.clamp(1 - (d / TAPS) ** 2, min=0))) / torch.special.i0(torch.tensor(6.0))
        kernels = cutoff * torch.sinc(cutoff * d) * window  # [items, phases, 2 TAPS]: each item's filter at each phase
        near = audio[at[moved][:, :, None] + taps]  # [items, n, 2 TAPS]: the samples around each read position
        item = torch.arange(int(moved.sum()), device=audio.device)[:, None]
        out[moved] = (near * kernels[item, phase]).sum(-1)
    return out


def batch_eq(x, taps):
    """random_eq on every row of x, each with its own taps [rows, 4] (b1, b2, a1, a2 in [-3/8, 3/8]): the filter's
    frequency response applied by FFT, padded so that its impulse response (poles within 0.83 of the origin) has
    died out (equals lfilter within float error)."""
    size = x.shape[1] + 2048
    taps = (taps.float() - 0.5) * 0.75
    ones = torch.ones(len(x), 1, device=x.device)
    b = torch.fft.rfft(torch.cat([ones, taps[:, :2]], 1), size)
    a = torch.fft.rfft(torch.cat([ones, taps[:, 2:]], 1), size)
    return torch.fft.irfft(torch.fft.rfft(x, size) * b / a, size)[:, :x.shape[1]]


def batch_mix(voice, noise, snr, level_db, peak=0.99):
    """audio.mix on every row: noise scaled to the SNR, one gain on both to the level (or to the peak); a silent voice
    crop gives its noise alone as the input and silence as the target, as RemixDataset. (noisy, voice)."""
    energy = lambda x: x.double().pow(2).sum(-1)
    silent = voice.abs().amax(1) < 1e-5
    scale = torch.sqrt(energy(voice) / (energy(noise).clamp_min(1e-20) * 10 ** (snr / 10)))
    mixture = voice + scale.float()[:, None] * noise
    gain = torch.minimum(10 ** (level_db / 20) / batch_rms(mixture.double()).clamp_min(1e-20),
                         peak / mixture.abs().amax(1).double().clamp_min(1e-20)).float()[:, None]
    return torch.where(silent[:, None], noise, mixture * gain), torch.where(silent[:, None], torch.zeros_like(voice), voice * gain)
