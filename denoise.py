"""
Denoise recordings with a trained model.

    python denoise.py input.wav                     # -> input_denoised.wav beside it
    python denoise.py a.wav b.flac -o cleaned/       # several files into a folder
    python denoise.py talk.mp3 -o talk_clean.wav --plot

The model (the pretrained models/unet.pt unless --model says otherwise) carries its own
audio settings. Any rate and channel count that soundfile (or ffmpeg) reads is accepted:
each channel is resampled to the model's rate, denoised, resampled back, and written with
the input's rate, channels and length. Long files are read, denoised and written in chunks with
overlapping context, so memory stays bounded and the seams are inaudible.
"""
import math
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from audio import arg_parser, UserError, atomic_save, load_audio, magnitude_to_db, resample, run_main, spectrogram_db
from checkpoint import DEFAULT_MODEL, describe_checkpoint, load_checkpoint, load_model
from onnx_backend import use_backend
from unet import level_gain


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("inputs", nargs="*", type=Path, help="audio files to denoise")
    p.add_argument("--info", action="store_true", help="print what the model is and what it learned from, and exit")
    p.add_argument("-o", "--output", help="output file (one input) or folder (several inputs, or ending in /)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint (default: the pretrained model)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--plot", action="store_true", help="also save a PNG beside each output: spectrograms of the input, the noise the model predicts (what it "
                   "subtracts) and the output")
    p.add_argument("--chunk-seconds", type=float, default=10.0, help="audio processed at once (memory bound)")
    p.add_argument("--floor-db", type=float, help="most attenuation per bin, e.g. -12 keeps more background "
                   "(default: the model's own floor)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="where the U-Net runs: auto uses onnxruntime on the CPU when an export of this very model "
                        "(python export.py) lies beside it as .onnx, else PyTorch")
    args = p.parse_args(argv)
    if not args.inputs and not args.info:
        p.error("give the audio files to denoise (or --info)")
    if args.info and args.inputs:  # "denoise.py --info runs/x.pt" would otherwise describe the default model
        p.error("--info describes the --model checkpoint and takes no files (e.g. --info --model runs/x/unet.pt)")
    if args.chunk_seconds <= 0:
        p.error("--chunk-seconds must be positive")
    if args.floor_db is not None and args.floor_db > 0:
        p.error("--floor-db must be 0 or less (e.g. -12)")
    return args


# ----------------------------------------------------------------------------- the core
def context_samples(model, sr):
    """Samples of context either side of a chunk: more than the U-Net and STFT can see."""
    reach = 7 + 2 ** model.config.temporal_blocks - 1  # bottleneck frames: the convolutions', then the temporal blocks'
    frames = reach * 2 ** model.unet.depth + 2 * model.audio.n_fft // model.audio.hop_length
    seconds = math.ceil(frames * model.audio.hop_length / model.audio.sample_rate * 4) / 4
    return round(seconds * sr)


@torch.no_grad()
def denoise_stream(model, read, n, sr, gain, chunk_seconds=10.0, device="cpu", progress=None):
    """Denoise n samples that read(a, b) returns as float32 [channels, b - a]; yields [channels, m] pieces.
    progress: a name to show a progress bar over the chunks under (when there are several).

    gain [channels] is the level normalisation for the whole recording, so that every chunk is
    treated exactly as the whole file would be.
    """
    msr = model.audio.sample_rate
    # chunk starts fall on the whole file's STFT frame grid and on its U-Net pooling grid
    # (every 2^depth frames), so a chunk sees exactly what the whole file would
    grid = model.audio.hop_length * 2 ** model.unet.depth
    unit = grid * sr // math.gcd(grid * sr, msr)
    step = max(1, round(chunk_seconds * sr / unit)) * unit
    ctx = math.ceil(context_samples(model, sr) / unit) * unit
    g = torch.as_tensor(gain, dtype=torch.float32, device=device)[:, None]
    starts = range(0, n, step)
    for s in tqdm(starts, desc=progress, unit="chunk", leave=False, disable=progress is None or len(starts) < 2):
        e = min(n, s + step)
        a, b = max(0, s - ctx), min(n, e + ctx)
        x = torch.from_numpy(np.ascontiguousarray(resample(read(a, b), sr, msr))).to(device)
        # one channel at a time: memory grows with the chunk length only, not the channel count
        y = torch.cat([model(x[c:c + 1], g[c:c + 1])[0] for c in range(len(x))]).cpu().numpy()
        y = resample(y, msr, sr)
        y = np.pad(y, ((0, 0), (0, max(0, (b - a) - y.shape[1]))))[:, : b - a]
        yield y[:, s - a:e - a]


def recording_gain(model, read, n, sr, block=1 << 20, name="the audio"):
    """Per-channel level normalisation over the whole recording, read in blocks."""
    total = 0.0
    for s in range(0, n, block):
        x = read(s, min(n, s + block)).astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise UserError(f"{name} contains NaN or infinite samples")
        total = total + np.sum(x ** 2, axis=1)
    rms = np.sqrt(total / n)
    return level_gain(torch.as_tensor(rms, dtype=torch.float32)[:, None], model.level_db)[:, 0].numpy()


def denoise_array(model, audio, sr, chunk_seconds=10.0, device="cpu"):
    """[channels, n] float32 at any rate -> denoised [channels, n] (the whole thing in memory)."""
    read = lambda a, b: audio[:, a:b]
    gain = recording_gain(model, read, audio.shape[1], sr)
    return np.concatenate(list(denoise_stream(model, read, audio.shape[1], sr, gain, chunk_seconds, device)), axis=1)


# ----------------------------------------------------------------------------- files
def output_path(inp, args, several):
    ext = inp.suffix.lower() if inp.suffix.lower() in (".wav", ".flac") else ".wav"
    name = f"{inp.stem}_denoised{ext}"
    if args.output is None:
        return inp.with_name(name)
    o = Path(args.output)
    if several or o.is_dir() or args.output.endswith(("/", os.sep)):  # (Path drops a trailing slash)
        if not o.is_dir():
            raise UserError(f"output folder does not exist: {o}")
        return o / name
    return o


def denoise_file(model, inp, out, args):
    if inp.resolve() == out.resolve():
        raise UserError(f"refusing to overwrite the input {inp}; choose another -o")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UserError(f"output folder does not exist: {out.parent}")
    try:  # stream from disk when libsndfile reads the format; otherwise decode it whole
        src = sf.SoundFile(inp)
        n, sr, channels, subtype = src.frames, src.samplerate, src.channels, src.subtype

        def read(a, b):
            try:
                src.seek(a)
                return src.read(b - a, dtype="float32", always_2d=True).T
            except sf.LibsndfileError as e:  # a file that opens but is damaged further on (truncated FLAC...)
                raise UserError(f"cannot read audio from {inp}: {str(e).splitlines()[0][:100]}") from None
    except Exception:
        src = None
        audio, sr = load_audio(inp)
        n, channels, subtype = audio.shape[1], audio.shape[0], "FLOAT"
        read = lambda a, b: audio[:, a:b]
    if n == 0:
        raise UserError(f"{inp} holds no audio samples")
    fmt = "FLAC" if out.suffix.lower() == ".flac" else "WAV"
    # MP3 input: check_format allows MPEG-in-WAV, which libsndfile cannot write
    if subtype.startswith("MPEG") or not sf.check_format(fmt, subtype):
        subtype = "PCM_24" if fmt == "FLAC" else "FLOAT"
    clipped = 0
    shown = min(n, 30 * sr)  # the plot shows the first 30 s
    before, after = (read(0, shown)[0] if args.plot else None), []

    gain = recording_gain(model, read, n, sr, name=inp)

    def write(tmp):
        nonlocal clipped
        with sf.SoundFile(tmp, "w", samplerate=sr, channels=channels, subtype=subtype, format=fmt) as dst:
            for piece in denoise_stream(model, read, n, sr, gain, args.chunk_seconds, args.device, progress=inp.name):
                if not np.all(np.isfinite(piece)):  # e.g. float samples so large that the level gain underflows
                    raise UserError(f"denoising {inp} gave NaN or infinite samples; its level is out of range")
                clipped += int(np.sum(np.abs(piece) > 1.0))
                if args.plot and sum(len(p) for p in after) < shown:
                    after.append(piece[0])
                dst.write(piece.T)

    try:
        atomic_save(out, write)
    finally:
        if src is not None:
            src.close()
    if clipped and not subtype.startswith(("FLOAT", "DOUBLE")):
        print(f"warning: {clipped} samples of {out} exceeded full scale and were clipped by the {subtype} format",
              file=sys.stderr)
    if args.plot:
        plot_before_after(before, np.concatenate(after)[:shown], sr, model, gain[0], out.with_suffix(".png"), inp.name)
    return n / sr


def plot_images(model, noisy, clean, gain):
    """dB images [bins, frames] of the input, the noise the U-Net predicts in it (|N|, what denoising subtracts)
    and the output; noisy and clean mono at the model's rate, gain the recording's level gain."""
    cfg = model.audio
    with torch.no_grad():
        noise = model(torch.from_numpy(noisy)[None], torch.tensor([[gain]], dtype=torch.float32))[1][0]
    return spectrogram_db(noisy, cfg), magnitude_to_db(noise[: cfg.n_bins], cfg).numpy(), spectrogram_db(clean, cfg)


def plot_before_after(noisy, clean, sr, model, gain, path, title):
    """plot_images of the first channel's first 30 s as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cfg = model.audio
    noisy, clean = resample(noisy[None], sr, cfg.sample_rate)[0], resample(clean[None], sr, cfg.sample_rate)[0]
    images = plot_images(model, np.ascontiguousarray(noisy, dtype=np.float32), clean, gain)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True)
    extent = (0, len(noisy) / cfg.sample_rate, 0, cfg.sample_rate / 2000)
    for ax, image, name in zip(axes, images, ("noisy input", "predicted noise |N|, subtracted", "denoised")):
        im = ax.imshow(image, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-80, vmax=0)
        ax.set(ylabel="kHz", title=f"{title}: {name}")
    axes[-1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="dB (0 = full-scale sine)")
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.info:
        print(describe_checkpoint(load_checkpoint(args.model), args.model))
        return
    for inp in args.inputs:
        if not inp.is_file():
            raise UserError(f"no such file: {inp}")
    model = use_backend(load_model(args.model, args.device), args.model, args.backend, args.device)
    if args.floor_db is not None:
        model.config.floor_db = args.floor_db
    several = len(args.inputs) > 1
    bar = tqdm(args.inputs, desc="denoising", unit="file", disable=not several)
    for inp in bar:
        out = output_path(inp, args, several)
        seconds = denoise_file(model, inp, out, args)
        bar.write(f"{inp} -> {out} ({seconds:.1f} s)")


if __name__ == "__main__":
    run_main(main)
