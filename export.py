"""
Export a trained model as one ONNX graph: the whole denoiser, waveform in, waveform out.

    python export.py                                        # models/unet.pt -> models/unet.onnx
    python export.py --model models/real/unet.pt --out real.onnx

The graph (Pipeline below) holds everything between reading and writing: the level gain,
the STFT (a convolution with a windowed DFT basis), the U-Net's noise estimate, the
subtraction with its floor, and the inverse STFT (the transposed convolution, with
overlap-add normalisation). denoise.py runs it in onnxruntime without PyTorch; the light
runtime only reads, resamples, chunks and writes (onnx_backend.py).

    inputs   waveform  float32 [batch, samples]  mono audio at the model's rate
             rms       float32 [batch, 1]        the whole recording's RMS (chunks are levelled as the whole)
             floor_db  float32 [1]               most attenuation per bin, dB (the model's own: metadata)
    outputs  denoised           float32 [batch, samples]
             magnitude, noise_magnitude, denoised_magnitude  float32 [batch, n_fft/2 + 1, frames]:
             |Y|, the predicted |N| and |S| at the recording's level, for plots

The audio settings, model_args, the checkpoint's description and two fingerprints (of the
weights and of the .pt file's bytes) travel in the file's metadata, so it describes itself
and denoise.py can tell an export of this very checkpoint.
"""
import hashlib
import io
import json
import logging
import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from audio import DEFAULT_MODEL, UserError, arg_parser, atomic_save, run_main, si_sdr
from checkpoint import describe_checkpoint, load_checkpoint, model_from_checkpoint
from onnx_backend import GRAPH, INPUTS, OUTPUTS, OnnxDenoiser, file_sha256
from unet import gain_from_rms, subtract_complex_parts, subtraction_gain

OPSET = 18


def parse_args(argv=None):
    p = arg_parser(__doc__)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint (default: the pretrained model)")
    p.add_argument("--out", type=Path, help="ONNX file (None: the model's path with .onnx)")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch.onnx's exporter; auto tries dynamo (torch.export), then the older TorchScript one")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version (17 or more)")
    args = p.parse_args(argv)
    if args.opset < 17:
        p.error("--opset must be 17 or more")
    return args


class Pipeline(torch.nn.Module):
    """The denoiser of unet.NoiseSubtractionDenoiser.forward in operations every ONNX runtime has: the STFT
    (torch.stft, centred, reflect padding, periodic Hann window) as a strided convolution with the windowed
    DFT basis, its inverse (torch.istft) as the transposed convolution divided by the overlap-added squared
    window. The level gain, the U-Net and the subtraction are the model's own functions."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        n, bins = model.audio.n_fft, model.audio.n_fft // 2 + 1
        angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64), torch.arange(n, dtype=torch.float64)) / n
        window = torch.hann_window(n, dtype=torch.float64)
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)])  # rows: Re, then Im, of e^{-2 pi i k t / n}
        # irfft: x[t] = sum_k c_k / n (Re X_k cos - Im X_k sin), c = 1 for DC and Nyquist, 2 between
        c = torch.full((bins,), 2.0, dtype=torch.float64)
        c[0] = c[-1] = 1.0
        self.register_buffer("analysis", (basis * window)[:, None].float())  # [2 bins, 1, n]
        self.register_buffer("synthesis", (basis * (torch.cat([c, c]) / n)[:, None] * window)[:, None].float())
        self.register_buffer("window_sq", (window ** 2)[None, None].float())

    def forward(self, waveform, rms, floor_db):
        model, hop, half = self.model, self.model.audio.hop_length, self.model.audio.n_fft // 2
        bins, samples = half + 1, waveform.shape[-1]
        gain = gain_from_rms(rms, model.level_db)
        spec = F.conv1d(F.pad((waveform * gain)[:, None], (half, half), mode="reflect"), self.analysis, stride=hop)
        re, im = spec[:, :bins], spec[:, bins:]
        floor, mag = torch.pow(10.0, floor_db / 20), torch.sqrt(re ** 2 + im ** 2)
        if model.subtraction == "complex":
            m = model.noise_mask(torch.stack([re, im], dim=1))
            n_re, n_im = m[:, 0] * re - m[:, 1] * im, m[:, 0] * im + m[:, 1] * re
            s_re, s_im = subtract_complex_parts(re, im, n_re, n_im, floor)
            noise = torch.sqrt(n_re ** 2 + n_im ** 2)
        else:
            noise = model.noise_fraction(mag) * mag
            g = subtraction_gain(mag, noise, floor)
            s_re, s_im = g * re, g * im
        y = F.conv_transpose1d(torch.cat([s_re, s_im], dim=1), self.synthesis, stride=hop)
        envelope = F.conv_transpose1d(torch.ones_like(spec[:1, :1]), self.window_sq, stride=hop)
        y = (y / envelope)[:, 0, half: half + samples] / gain
        level = gain[..., None]
        return (y, mag / level, noise / level,
                torch.sqrt(s_re ** 2 + s_im ** 2) / level)


def fingerprint(model):
    """SHA-256 of the weights (float32, by name): which weights an export holds, whatever file they came in."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def example_inputs(model, samples=None, batch=1, seed=0):
    """A noisy tone at speech level (default: 1 s), its RMS, and the model's floor: the graph's inputs."""
    samples = samples or model.audio.sample_rate
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / model.audio.sample_rate
    x = 0.1 * torch.sin(2 * math.pi * 220 * t) + 0.03 * torch.randn(batch, samples, generator=g)
    return x, x.pow(2).mean(-1, keepdim=True).sqrt(), torch.tensor([model.config.floor_db])


def metadata(model, ckpt, path):
    """What the file says of itself (metadata_props, JSON values)."""
    meta = dict(graph=GRAPH, audio=model.audio.to_dict(), model_args=model.config.to_dict(),
                frame_grid=model.frame_grid(), reach_frames=model.reach_frames(),
                weights_sha256=fingerprint(model), checkpoint_sha256=file_sha256(path),
                description=describe_checkpoint(ckpt, Path(path).name), inputs=INPUTS, outputs=OUTPUTS)
    for key in ("epoch", "best_val_si_sdr", "code_version"):
        if key in ckpt:
            meta[key] = ckpt[key]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _to_proto(model, exporter, opset):
    """torch.onnx.export of the Pipeline with dynamic batch and samples -> onnx.ModelProto."""
    import onnx
    net = Pipeline(model).eval()
    example = example_inputs(model)
    names = dict(input_names=list(INPUTS), output_names=list(OUTPUTS), opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" etc.
        if exporter == "dynamo":
            # Dim.DYNAMIC, not named Dims: with named ones torch 2.13 trips on the U-Net's pad to a multiple
            # of 2^depth ("Cannot create Dim with inconsistent min=0, max=-oo"); the dims are named below
            d = torch.export.Dim.DYNAMIC
            shapes = {"waveform": {0: d, 1: d}, "rms": {0: d}, "floor_db": None}
            proto = torch.onnx.export(net, example, dynamo=True, dynamic_shapes=shapes, verbose=False,
                                      **names).model_proto
        else:
            buf = io.BytesIO()
            axes = dict(waveform={0: "batch", 1: "samples"}, rms={0: "batch"}, denoised={0: "batch", 1: "samples"},
                        **{k: {0: "batch", 2: "frames"} for k in list(OUTPUTS)[1:]})
            torch.onnx.export(net, example, buf, dynamo=False, dynamic_axes=axes, **names)
            proto = onnx.load_from_string(buf.getvalue())
    for value in (*proto.graph.input, *proto.graph.output):  # name the dynamic dims (some read as expressions)
        dims = value.type.tensor_type.shape.dim
        if value.name != "floor_db":
            dims[0].dim_param = "batch"
        if value.name in ("waveform", "denoised"):
            dims[1].dim_param = "samples"
        elif value.name in OUTPUTS:
            dims[2].dim_param = "frames"
    return proto


def export(model, path, ckpt, ckpt_path, exporter="auto", opset=OPSET):
    """Write the model's Pipeline as ONNX to path (atomically); returns the exporter that worked."""
    try:
        import onnx
    except ImportError:
        raise UserError("exporting needs the onnx package: pip install onnx onnxscript") from None
    model = model.cpu().eval()
    errors = []
    for name in (("dynamo", "torchscript") if exporter == "auto" else (exporter,)):
        try:
            proto = _to_proto(model, name, opset)
            break
        except Exception as e:  # e.g. onnxscript missing, or an exporter that trips on an op
            errors.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
    else:
        raise UserError("ONNX export failed (" + "; ".join(errors) + ")")
    for key, value in metadata(model, ckpt, ckpt_path).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "noise-subtraction U-Net speech denoiser, waveform to waveform; see metadata_props"
    onnx.checker.check_model(proto)
    atomic_save(path, lambda tmp: onnx.save(proto, tmp))
    return name


def main(argv=None):
    args = parse_args(argv)
    ckpt = load_checkpoint(args.model)
    model = model_from_checkpoint(ckpt, args.model)
    out = args.out or args.model.with_suffix(".onnx")
    if out.resolve() == args.model.resolve():
        raise UserError(f"--out {out} would replace the model itself")
    used = export(model, out, ckpt, args.model, args.exporter, args.opset)
    line = f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, torch {torch.__version__} {used} exporter)"
    try:  # a quick check on an odd length, when onnxruntime is installed: the graph against the PyTorch model
        x, rms, _ = example_inputs(model, model.audio.sample_rate + 1, seed=1)
        with torch.no_grad():
            expected = model(x, gain_from_rms(rms, model.level_db))[0]
        got = torch.from_numpy(OnnxDenoiser(out).denoise(x.numpy(), rms[:, 0].numpy()))
        line += f"; onnxruntime matches PyTorch: SI-SDR {si_sdr(got, expected, eps=1e-20).item():.1f} dB between the outputs"
    except ImportError:
        line += "; pip install onnxruntime to run it"
    print(line)


if __name__ == "__main__":
    run_main(main)
