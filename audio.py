"""
Shared audio and spectrogram code: the one source of truth for audio parameters.

Everything that turns a waveform into a picture or a tensor and back lives here, so that
prepare_data.py, train.py, denoise.py and evaluate.py cannot disagree about the sample
rate, the STFT or the dB scale. The settings travel inside every checkpoint as
`AudioConfig.to_dict()`, so a model is always used with the settings it was trained on.

The dB scale (used for PNGs and as the network's input):
    dB = 20 * log10(|X| / ref),  ref = sum(window) / 2
so a full-scale sine wave reads 0 dB in its bin, and every value is clipped to
[db_min, db_max] = [-100, +20] dB. A 16-bit PNG stores (dB - db_min) / (db_max - db_min)
* 65535, i.e. steps of 0.0018 dB, with low frequencies at the bottom of the image.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

NEEDS_FFMPEG = (".3gp", ".m4a", ".aac", ".amr", ".wma", ".mp4")  # formats libsndfile cannot read
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus") + NEEDS_FFMPEG


DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "unet.pt"  # the pretrained model, wherever we run


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown beside each flag (unless None, or the help already says it); the examples kept as written."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def arg_parser(doc):
    """A script's ArgumentParser: the first paragraph of its docstring as the description, its example
    command lines (the indented `python ...` lines) as the epilog of --help, and every default shown."""
    head, _, rest = doc.strip().partition("\n\n")
    examples = [line for line in rest.splitlines() if line.lstrip().startswith("python ")]
    return argparse.ArgumentParser(description=head, formatter_class=_HelpFormatter,
                                   epilog="examples:\n" + "\n".join(examples) if examples else None)


class UserError(Exception):
    """An ordinary mistake (missing file, bad value): printed as one line, exit code 2."""


def run_main(main):
    """Run a script's main(), turning UserError and Ctrl-C into a one-line message."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000  # wide-band speech; PESQ-WB needs 16 kHz
    n_fft: int = 512          # 32 ms window at 16 kHz
    hop_length: int = 128     # 8 ms hop
    db_min: float = -100.0    # the fixed dB scale of images and network input
    db_max: float = 20.0

    @property
    def n_bins(self):
        """Frequency bins the U-Net sees: the Nyquist bin is dropped (257 -> 256)."""
        return self.n_fft // 2

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ----------------------------------------------------------------------------- STFT
def _window(cfg, device):
    import torch  # here, not at the top: denoise.py's light path runs without PyTorch
    return torch.hann_window(cfg.n_fft, device=device)


def stft(x, cfg):
    """Waveform [..., n] (tensor) -> complex spectrogram [..., n_fft//2 + 1, frames]."""
    import torch
    shape = x.shape
    spec = torch.stft(x.reshape(-1, shape[-1]), cfg.n_fft, cfg.hop_length, window=_window(cfg, x.device),
                      center=True, pad_mode="reflect" if shape[-1] > cfg.n_fft // 2 else "constant",
                      return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec, cfg, length):
    """Complex spectrogram [..., bins, frames] -> waveform [..., length]."""
    import torch
    shape = spec.shape
    x = torch.istft(spec.reshape(-1, *shape[-2:]), cfg.n_fft, cfg.hop_length, window=_window(cfg, spec.device),
                    center=True, length=length)
    return x.reshape(*shape[:-2], length)


def magnitude_to_db(mag, cfg):
    """Linear STFT magnitude -> dB on the fixed scale (clipped to [db_min, db_max])."""
    ref = cfg.n_fft / 4  # sum of a periodic Hann window is n_fft/2; a sine of amplitude 1 peaks at ref
    lib = np if isinstance(mag, (np.ndarray, np.generic, float)) else __import__("torch")
    db = 20 * lib.log10(lib.clip(mag / ref, 10 ** (cfg.db_min / 20), None))
    return lib.clip(db, cfg.db_min, cfg.db_max)


def db_to_magnitude(db, cfg):
    return (cfg.n_fft / 4) * 10 ** (db / 20)


def db_to_unit(db, cfg):
    """dB on the fixed scale -> [0, 1]: the network's input and the PNG's grey level."""
    return (db - cfg.db_min) / (cfg.db_max - cfg.db_min)


def spectrogram_db(wave, cfg):
    """Mono waveform (numpy) -> dB image [n_bins, frames], Nyquist bin dropped."""
    import torch
    spec = stft(torch.as_tensor(np.asarray(wave, dtype=np.float32)), cfg)
    return magnitude_to_db(spec.abs()[: cfg.n_bins], cfg).numpy()


# ----------------------------------------------------------------------------- 16-bit PNGs
def save_png(db, path, cfg):
    """dB image [bins, frames] -> 16-bit grayscale PNG, low frequencies at the bottom."""
    from PIL import Image
    level = np.round(db_to_unit(np.clip(db, cfg.db_min, cfg.db_max), cfg) * 65535).astype(np.uint16)
    atomic_save(path, lambda tmp: Image.fromarray(level[::-1].copy()).save(tmp, format="PNG"))


def load_png(path, cfg):
    """16-bit PNG written by save_png -> dB image [bins, frames]."""
    from PIL import Image
    with Image.open(path) as im:
        level = np.asarray(im, dtype=np.float64)[::-1]
    return cfg.db_min + level / 65535 * (cfg.db_max - cfg.db_min)


# ----------------------------------------------------------------------------- files
def temp_path(path):
    """Where atomic_save writes before renaming: a hidden file beside path (fixed, so a stale one is reused)."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp"


def atomic_save(path, write):
    """Call write(tmp_path) and then rename tmp onto path, so path is never half-written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"output folder does not exist: {path.parent}")
    tmp = temp_path(path)
    try:
        open(tmp, "wb").close()
    except OSError as e:  # a read-only folder, a full disk...
        raise UserError(f"cannot write to {path.parent}: {e.strerror}") from None
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_audio(path, audio, sr, subtype="FLOAT"):
    """Write [n] or [channels, n] audio atomically (float WAV keeps noisy == voice + noise exact)."""
    audio = np.asarray(audio, dtype=np.float32)
    data = audio.T if audio.ndim == 2 else audio
    fmt = {".flac": "FLAC", ".ogg": "OGG"}.get(Path(path).suffix.lower(), "WAV")
    if fmt != "WAV":
        subtype = {"FLAC": "PCM_24", "OGG": "VORBIS"}[fmt]
    atomic_save(path, lambda tmp: sf.write(tmp, data, sr, subtype=subtype, format=fmt))


def load_audio(path, sr=None, mono=False):
    """Read an audio file: returns float32 [channels, n] and its rate.

    libsndfile (soundfile) reads WAV, FLAC, OGG, MP3, AIFF...; formats it lacks (.3gp, .m4a...) are
    decoded by ffmpeg when it is on the PATH. With sr, the audio is resampled (soxr); with mono,
    channels are averaged.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        audio, file_sr = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.T
    except Exception as e:
        if not shutil.which("ffmpeg"):
            hint = " (ffmpeg, which would read it, is not installed)" if path.suffix.lower() in NEEDS_FFMPEG else ""
            raise UserError(f"cannot read audio from {path}: {str(e).splitlines()[0][:100]}{hint}") from None
        audio, file_sr = ffmpeg_decode(path)
    if audio.shape[1] == 0:
        raise UserError(f"{path} holds no audio samples")
    if mono:
        audio = audio.mean(axis=0, keepdims=True)
    if sr is not None and file_sr != sr:
        audio, file_sr = resample(audio, file_sr, sr), sr
    return np.ascontiguousarray(audio, dtype=np.float32), int(file_sr)


def ffmpeg_decode(path):
    """Decode any format ffmpeg knows to float32 [channels, n] through a temporary float WAV."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "decoded.wav")
        r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-c:a", "pcm_f32le", wav],
                           capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(wav):
            raise UserError(f"cannot read audio from {path}: ffmpeg says {r.stderr.strip().splitlines()[-1:]}")
        audio, file_sr = sf.read(wav, dtype="float32", always_2d=True)
    return audio.T, file_sr


def resample(audio, sr_in, sr_out):
    """[..., n] float32 from sr_in to sr_out with soxr's HQ filter (what librosa's 'soxr_hq' calls;
    calling soxr itself spares denoise.py librosa's import time and ~190 MB of memory)."""
    if sr_in == sr_out:
        return audio
    import soxr
    x = np.asarray(audio, dtype=np.float32)
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]).T)  # soxr wants [frames, channels]
    y = soxr.resample(flat, sr_in, sr_out, quality="HQ").T
    n = math.ceil(x.shape[-1] * sr_out / sr_in)  # as librosa: ceil, so one sample never becomes none
    y = np.pad(y, ((0, 0), (0, max(0, n - y.shape[1]))))[:, :n]
    return np.ascontiguousarray(y, dtype=np.float32).reshape(*x.shape[:-1], n)


def find_audio(folder):
    """All audio files under folder, recursively, in a stable (sorted) order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not p.name.startswith("."))


# ----------------------------------------------------------------------------- levels and metrics
def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def snr_db(voice, noise):
    """10 log10(sum voice^2 / sum noise^2) over the whole clip: the SNR written in manifests."""
    return 10 * np.log10(np.sum(np.square(voice, dtype=np.float64)) / np.sum(np.square(noise, dtype=np.float64)))


def mix(voice, noise, snr, level_db, peak=0.99):
    """Scale noise to the target SNR, then apply one gain to both: returns float32 (noisy, voice, noise)."""
    voice, noise = voice.astype(np.float64), noise.astype(np.float64)
    noise *= np.sqrt(np.sum(voice ** 2) / (np.sum(noise ** 2) * 10 ** (snr / 10)))
    mixture = voice + noise
    gain = min(10 ** (level_db / 20) / rms(mixture), peak / np.abs(mixture).max())
    v, n = (voice * gain).astype(np.float32), (noise * gain).astype(np.float32)
    return v + n, v, n



def si_sdr(est, ref, eps=1e-8):
    """Scale-invariant SDR in dB over the last axis (torch tensors; zero-mean, as in Le Roux et al. 2019)."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    import torch
    return 10 * torch.log10(((target ** 2).sum(-1) + eps) / (((est - target) ** 2).sum(-1) + eps))
