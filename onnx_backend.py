"""
Running an exported model (python export.py) in onnxruntime, for denoise.py --backend and for
callers that ship only the .onnx file.

Only the U-Net's noise estimate is in the graph (export.py says what it computes); the STFT, the
level gain, the subtraction with its floor and the inverse STFT stay in torch, so a denoiser with
this graph swapped in is used exactly as the PyTorch one (denoise.denoise_array, denoise_stream).
"""
import json
from pathlib import Path

import numpy as np
import torch

from audio import UserError
from unet import build_model

GRAPHS = {"magnitude": "noise_fraction/1", "complex": "noise_mask/1"}  # what the graph computes, and its version
IO_NAMES = {"magnitude": ("magnitude", "noise_fraction"), "complex": ("spectrum", "noise_mask")}


def fingerprint(model):
    """SHA-256 of the weights (float32), so that denoise.py can tell an export of this very checkpoint."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_metadata(path):
    """metadata_props of an exported file, JSON values decoded."""
    import onnx
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    out = {}
    for k, v in props.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def onnx_session(path, threads=None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxNoiseEstimate:
    """A stand-in for model.noise_fraction (or model.noise_mask) that runs the exported graph in onnxruntime."""

    def __init__(self, path, threads=None):
        self.session = onnx_session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x):
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out).to(x.device)


def use_onnx(model, path, threads=None):
    """Swap the model's noise estimate for the exported graph at path (the STFT and subtraction stay in torch)."""
    name = "noise_mask" if model.subtraction == "complex" else "noise_fraction"
    setattr(model, name, OnnxNoiseEstimate(path, threads))
    return model


def denoiser_from_onnx(path, threads=None):
    """A NoiseSubtractionDenoiser whose noise estimate runs in onnxruntime (no .pt needed)."""
    meta = read_metadata(path)
    if meta.get("graph") not in GRAPHS.values():
        raise UserError(f"{path} is not an ONNX export of this repo's model (graph {meta.get('graph')!r})")
    return use_onnx(build_model(meta["model_args"], meta["audio"]).eval(), path, threads)


def matching_onnx(path, model):
    """The ONNX export of exactly these weights beside the checkpoint at path, or None."""
    onnx_path = Path(path).with_suffix(".onnx")
    if not onnx_path.exists():
        return None
    try:
        meta = read_metadata(onnx_path)
    except Exception:  # onnx not installed, or not a readable file: PyTorch it is
        return None
    return onnx_path if meta.get("weights_sha256") == fingerprint(model) else None


def use_backend(model, path, backend, device):
    """Swap the U-Net call for onnxruntime where asked (or, with auto, where a matching export exists)."""
    if backend == "torch" or device != "cpu":
        if backend == "onnx":
            raise UserError("--backend onnx runs on the CPU only")
        return model
    onnx_path = matching_onnx(path, model)
    if onnx_path is None:
        if backend == "onnx":
            raise UserError(f"no ONNX export of {path} beside it: run `python export.py --model {path}`")
        return model
    try:
        use_onnx(model, onnx_path, torch.get_num_threads())
    except ImportError:
        if backend == "onnx":
            raise UserError("--backend onnx needs onnxruntime: pip install onnxruntime") from None
    return model
