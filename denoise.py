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

Without PyTorch (pip install -r requirements-denoise.txt) the model runs in onnxruntime from
its export beside it (models/unet.onnx, made by python export.py): the same flags, outputs
and errors. With PyTorch it runs there too on the CPU when the export matches the checkpoint
byte for byte (--backend auto), and in PyTorch otherwise.
"""
import math
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audio import DEFAULT_MODEL, UserError, arg_parser, atomic_save, load_audio, magnitude_to_db, resample, run_main
from onnx_backend import OnnxDenoiser, export_of

MODEL_CARD = Path(__file__).resolve().parent / "MODEL_CARD.md"


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("inputs", nargs="*", type=Path, help="audio files to denoise")
    p.add_argument("--info", action="store_true", help="print what the model is and what it learned from, and exit")
    p.add_argument("-o", "--output", help="output file (one input) or folder (several inputs, or ending in /)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help="checkpoint (.pt) or its export (.onnx) (default: the pretrained model)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--plot", action="store_true", help="also save a PNG beside each output: spectrograms of the input, the noise the model predicts (what it "
                   "subtracts) and the output")
    p.add_argument("--chunk-seconds", type=float, default=10.0, help="audio processed at once (memory bound)")
    p.add_argument("--floor-db", type=float, help="most attenuation per bin, e.g. -12 keeps more background "
                   "(default: the model's own floor)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps (PyTorch)")
    p.add_argument("--threads", type=int, help="CPU threads (default: onnxruntime's or PyTorch's own choice)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto: onnxruntime on the CPU when the .onnx beside the .pt was exported from it "
                        "(python export.py) or PyTorch is not installed, else PyTorch")
    args = p.parse_args(argv)
    if not args.inputs and not args.info:
        p.error("give the audio files to denoise (or --info)")
    if args.info and args.inputs:  # "denoise.py --info runs/x.pt" would otherwise describe the default model
        p.error("--info describes the --model checkpoint and takes no files (e.g. --info --model runs/x/unet.pt)")
    if args.chunk_seconds <= 0:
        p.error("--chunk-seconds must be positive")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be 1 or more")
    if args.floor_db is not None and args.floor_db > 0:
        p.error("--floor-db must be 0 or less (e.g. -12)")
    return args


# ----------------------------------------------------------------------------- the two runners
class TorchDenoiser:
    """The PyTorch model behind the interface denoise_stream uses (onnx_backend.OnnxDenoiser is the other):
    .audio, .frame_grid, .reach_frames, .level_db, a settable .floor_db, denoise(x, rms) and spectra(x, rms),
    x float32 [1, n] at the model's rate and rms the whole recording's RMS."""

    def __init__(self, model, device="cpu"):
        self.model, self.device = model.eval(), device
        self.audio, self.level_db = model.audio, model.level_db
        self.frame_grid, self.reach_frames = model.frame_grid(), model.reach_frames()

    @property
    def floor_db(self):
        return self.model.config.floor_db

    @floor_db.setter
    def floor_db(self, db):
        self.model.config.floor_db = db

    def _run(self, x, rms):
        import torch
        from unet import gain_from_rms
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        gain = gain_from_rms(torch.as_tensor(np.asarray(rms, dtype=np.float32), device=self.device)[:, None],
                             self.level_db)
        with torch.no_grad():
            return x, *self.model(x, gain)

    def denoise(self, x, rms):
        return self._run(x, rms)[1].cpu().numpy()

    def spectra(self, x, rms):
        from audio import stft
        x, y, noise = self._run(x, rms)
        return [a[0].cpu().numpy() for a in (stft(x, self.audio).abs(), noise, stft(y, self.audio).abs())]


def as_runner(model, device="cpu"):
    """A runner as is; a PyTorch NoiseSubtractionDenoiser wrapped in TorchDenoiser (evaluate.py, tests)."""
    return model if isinstance(model, (TorchDenoiser, OnnxDenoiser)) else TorchDenoiser(model, device)


def load_runner(args):
    """The runner --model, --backend and --device ask for (the module docstring says how auto chooses)."""
    path = args.model
    if not path.is_file():
        hint = ": restore the pretrained one (git checkout models/)" if path == DEFAULT_MODEL else ""
        raise UserError(f"no model at {path}{hint}")
    if path.suffix.lower() == ".onnx":
        if args.backend == "torch" or args.device != "cpu":
            raise UserError(f"{path} is an ONNX export: it runs in onnxruntime on the CPU (no --backend torch, --device)")
        try:
            return OnnxDenoiser(path, args.threads)
        except ImportError:
            raise UserError("an .onnx model needs onnxruntime: pip install -r requirements-denoise.txt") from None
    exported = export_of(path, args.threads) if args.backend != "torch" and args.device == "cpu" else None
    if exported is not None:
        return exported
    if args.backend == "onnx":
        raise UserError(f"no ONNX export of {path} beside it (or one made from another checkpoint, or onnxruntime "
                        f"missing): run `python export.py --model {path}`")
    try:
        import torch
    except ImportError:
        raise UserError(f"{path} needs PyTorch (pip install -r requirements.txt), or its export beside it: "
                        f"python export.py --model {path} where PyTorch is installed") from None
    from checkpoint import load_model
    if args.threads:
        torch.set_num_threads(args.threads)
    return TorchDenoiser(load_model(path, args.device), args.device)


# ----------------------------------------------------------------------------- the core
def context_samples(runner, sr):
    """Samples of context either side of a chunk: more than the U-Net and STFT can see (runner: or a model)."""
    runner = as_runner(runner)
    frames = runner.reach_frames + 2 * runner.audio.n_fft // runner.audio.hop_length  # the network's, the STFT's
    seconds = math.ceil(frames * runner.audio.hop_length / runner.audio.sample_rate * 4) / 4
    return round(seconds * sr)


def denoise_stream(runner, read, n, sr, rms, chunk_seconds=10.0, progress=None):
    """Denoise n samples that read(a, b) returns as float32 [channels, b - a]; yields [channels, m] pieces.
    progress: a name to show a progress bar over the chunks under (when there are several).

    rms [channels] is the whole recording's (recording_rms): every chunk is brought to the model's level
    with the same gain, so that it is treated exactly as the whole file would be.
    """
    msr = runner.audio.sample_rate
    # chunk starts fall on the whole file's STFT frame grid and on its U-Net pooling grid
    # (every frame_grid frames), so a chunk sees exactly what the whole file would
    grid = runner.audio.hop_length * runner.frame_grid
    unit = grid * sr // math.gcd(grid * sr, msr)
    step = max(1, round(chunk_seconds * sr / unit)) * unit
    ctx = math.ceil(context_samples(runner, sr) / unit) * unit
    rms = np.asarray(rms, dtype=np.float32)
    starts = range(0, n, step)
    for s in tqdm(starts, desc=progress, unit="chunk", leave=False, disable=progress is None or len(starts) < 2):
        e = min(n, s + step)
        a, b = max(0, s - ctx), min(n, e + ctx)
        x = np.ascontiguousarray(resample(read(a, b), sr, msr), dtype=np.float32)
        # one channel at a time: memory grows with the chunk length only, not the channel count
        y = np.concatenate([runner.denoise(x[c:c + 1], rms[c:c + 1]) for c in range(len(x))])
        y = resample(y, msr, sr)
        y = np.pad(y, ((0, 0), (0, max(0, (b - a) - y.shape[1]))))[:, : b - a]
        yield y[:, s - a:e - a]


def recording_rms(read, n, block=1 << 20, name="the audio"):
    """Per-channel RMS of the whole recording, read in blocks."""
    total = 0.0
    for s in range(0, n, block):
        x = read(s, min(n, s + block)).astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise UserError(f"{name} contains NaN or infinite samples")
        total = total + np.sum(x ** 2, axis=1)
    return np.sqrt(total / n)


def denoise_array(model, audio, sr, chunk_seconds=10.0, device="cpu"):
    """[channels, n] float32 at any rate -> denoised [channels, n] (the whole thing in memory); model a runner
    or a PyTorch model."""
    runner, read = as_runner(model, device), lambda a, b: audio[:, a:b]
    rms = recording_rms(read, audio.shape[1])
    return np.concatenate(list(denoise_stream(runner, read, audio.shape[1], sr, rms, chunk_seconds)), axis=1)


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


def denoise_file(runner, inp, out, args):
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
    rms = recording_rms(read, n, name=inp)
    excerpt = read(0, min(n, 30 * sr))[0] if args.plot else None  # the plot shows the first 30 s

    def write(tmp):
        nonlocal clipped
        with sf.SoundFile(tmp, "w", samplerate=sr, channels=channels, subtype=subtype, format=fmt) as dst:
            for piece in denoise_stream(runner, read, n, sr, rms, args.chunk_seconds, progress=inp.name):
                if not np.all(np.isfinite(piece)):  # e.g. float samples so large that the level gain underflows
                    raise UserError(f"denoising {inp} gave NaN or infinite samples; its level is out of range")
                clipped += int(np.sum(np.abs(piece) > 1.0))
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
        plot_before_after(excerpt, sr, runner, rms[0], out.with_suffix(".png"), inp.name)
    return n / sr


def plot_images(runner, noisy, rms):
    """dB images [bins, frames] of the input, the noise the model predicts in it (|N|, what denoising subtracts)
    and the output, from the runner's spectra; noisy mono at the model's rate, rms the recording's RMS."""
    cfg = runner.audio
    return [magnitude_to_db(m[: cfg.n_bins], cfg) for m in runner.spectra(noisy[None], np.float32([rms]))]


def plot_before_after(noisy, sr, runner, rms, path, title):
    """plot_images of the first channel's first 30 s as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cfg = runner.audio
    noisy = np.ascontiguousarray(resample(noisy[None], sr, cfg.sample_rate)[0], dtype=np.float32)
    images = plot_images(runner, noisy, rms)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True)
    extent = (0, len(noisy) / cfg.sample_rate, 0, cfg.sample_rate / 2000)
    for ax, image, name in zip(axes, images, ("noisy input", "predicted noise |N|, subtracted", "denoised")):
        im = ax.imshow(image, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-80, vmax=0)
        ax.set(ylabel="kHz", title=f"{title}: {name}")
    axes[-1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="dB (0 = full-scale sine)")
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def describe(runner, path):
    """--info: the checkpoint's own description (with PyTorch), or the one its export carries."""
    if path.suffix.lower() != ".onnx":
        try:
            from checkpoint import describe_checkpoint, load_checkpoint
            return describe_checkpoint(load_checkpoint(path), path)
        except ImportError:  # no PyTorch
            pass
    return f"{runner.meta['description']}\n(as recorded in its export {runner.path})"


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    for inp in args.inputs:
        if not inp.is_file():
            raise UserError(f"no such file: {inp}")
    runner = load_runner(args)
    if args.info:
        print(describe(runner, args.model))
        print(f"model card: {MODEL_CARD}")
        return
    if args.floor_db is not None:
        runner.floor_db = args.floor_db
    several = len(args.inputs) > 1
    bar = tqdm(args.inputs, desc="denoising", unit="file", disable=not several)
    for inp in bar:
        out = output_path(inp, args, several)
        seconds = denoise_file(runner, inp, out, args)
        bar.write(f"{inp} -> {out} ({seconds:.1f} s)")


if __name__ == "__main__":
    run_main(main)
