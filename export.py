"""
Export a trained model's noise estimate to ONNX.

    python export.py                                        # models/unet.pt -> models/unet.onnx
    python export.py --model models/real/unet.pt --out real.onnx

The graph is the model's noise estimate, whole. For a magnitude model it is
NoiseSubtractionDenoiser.noise_fraction: the linear STFT magnitude |Y| [batch, n_fft/2 + 1,
frames] of the waveform brought to the model's level (level_db dBFS RMS) -> the predicted
noise as a fraction of |Y| (a sigmoid, 0..1), same shape. For a complex model it is
noise_mask: Y as (Re, Im) [batch, 2, n_fft/2 + 1, frames] -> the complex fraction M of Y
that is noise, as (Re, Im), same shape. The fixed dB scale, the U-Net and the Nyquist-bin
copy are inside; batch and frames are dynamic, any number of frames. The STFT, the level
gain, the subtraction and the inverse STFT stay outside (torch or numpy), so a runtime swaps
this graph in for the one torch call:
`onnx_backend.denoiser_from_onnx(path)` builds a denoiser that denoise.denoise_array/denoise_stream
use unchanged. The audio settings and model_args travel in the file's metadata_props (JSON),
so it describes itself.
"""
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from audio import arg_parser, UserError, atomic_save, run_main
from checkpoint import DEFAULT_MODEL, load_checkpoint, model_from_checkpoint
from onnx_backend import GRAPHS, IO_NAMES, OnnxNoiseEstimate, fingerprint

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


class NoiseEstimate(torch.nn.Module):
    """The exported part: |Y| [B, bins, frames] -> noise fraction (magnitude models), or
    Y as (Re, Im) [B, 2, bins, frames] -> complex noise fraction as (Re, Im) (complex models)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.noise_mask(x) if self.model.subtraction == "complex" else self.model.noise_fraction(x)


def example_input(model, frames):
    """A random input of the graph's shape: magnitudes, or (Re, Im) pairs, at speech-like levels."""
    bins = model.audio.n_fft // 2 + 1
    if model.subtraction == "complex":
        return torch.randn(1, 2, bins, frames) * model.audio.n_fft / 8
    return torch.rand(1, bins, frames) * model.audio.n_fft / 4


def metadata(model, ckpt=None):
    """What the file says of itself (metadata_props, JSON values): graph, audio, model_args, weights' hash."""
    if model.subtraction == "complex":
        io = dict(input="spectrum: float32 [batch, 2, n_fft/2+1, frames], (Re, Im) of the STFT (audio.stft) of the "
                        "waveform scaled to level_db dBFS RMS (unet.level_gain)",
                  output="noise_mask: float32, same shape, (Re, Im) of the complex fraction M of the spectrum that "
                         "is noise (|M| < 1); the denoised spectrum is Y - M Y")
    else:
        io = dict(input="magnitude: float32 [batch, n_fft/2+1, frames], linear STFT magnitude (audio.stft) of the "
                        "waveform scaled to level_db dBFS RMS (unet.level_gain)",
                  output="noise_fraction: float32, same shape, predicted noise magnitude / magnitude (0..1)")
    meta = dict(graph=GRAPHS[model.subtraction], audio=model.audio.to_dict(), model_args=model.config.to_dict(),
                weights_sha256=fingerprint(model), **io)
    for key in ("epoch", "best_val_si_sdr", "code_version"):
        if ckpt and key in ckpt:
            meta[key] = ckpt[key]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _to_proto(model, exporter, opset, frames=100):
    """torch.onnx.export of NoiseEstimate with dynamic batch and frames -> onnx.ModelProto."""
    import onnx
    net = NoiseEstimate(model).eval()
    example = example_input(model, frames)
    inp, out = IO_NAMES[model.subtraction]
    frames_axis = example.dim() - 1
    names = dict(input_names=[inp], output_names=[out], opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" etc.
        if exporter == "dynamo":
            # Dim.DYNAMIC, not named Dims: with named ones torch 2.13 trips on the U-Net's pad to a multiple
            # of 2^depth ("Cannot create Dim with inconsistent min=0, max=-oo"); the dims are named below
            dims = {0: torch.export.Dim.DYNAMIC, frames_axis: torch.export.Dim.DYNAMIC}
            program = torch.onnx.export(net, (example,), dynamo=True, dynamic_shapes={"x": dims},
                                        verbose=False, **names)
            proto = program.model_proto
        else:
            buf = io.BytesIO()
            axes = {0: "batch", frames_axis: "frames"}
            torch.onnx.export(net, (example,), buf, dynamo=False, dynamic_axes={inp: axes, out: axes}, **names)
            proto = onnx.load_from_string(buf.getvalue())
    for value in (*proto.graph.input, *proto.graph.output):  # the output's frames read as an expression: name it
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param, dims[len(dims) - 1].dim_param = "batch", "frames"
    return proto


def export(model, path, exporter="auto", opset=OPSET, ckpt=None):
    """Write the model's noise estimate as ONNX to path (atomically); returns the exporter that worked."""
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
    for key, value in metadata(model, ckpt).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "U-Net noise estimate of a noise-subtraction speech denoiser; see metadata_props"
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
    used = export(model, out, args.exporter, args.opset, ckpt)
    line = f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, torch {torch.__version__} {used} exporter)"
    try:  # a quick check on an odd number of frames, when onnxruntime is installed
        x = example_input(model, 77)
        with torch.no_grad():
            diff = (OnnxNoiseEstimate(out)(x) - NoiseEstimate(model)(x)).abs().max().item()
        line += f"; onnxruntime matches PyTorch within {diff:.1e}"
    except ImportError:
        line += "; pip install onnxruntime to run it"
    print(line)


if __name__ == "__main__":
    run_main(main)
