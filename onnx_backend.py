"""
The light runtime: an exported model (python export.py) in onnxruntime, no PyTorch.

The .onnx file is the whole denoiser (export.Pipeline: level, STFT, U-Net, subtraction with
its floor, inverse STFT), so OnnxDenoiser only feeds it audio at the model's rate and the
recording's RMS; denoise.py reads, resamples, chunks and writes around it, the same code for
either runner (this one, or denoise.TorchDenoiser with PyTorch).
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from audio import AudioConfig, UserError

GRAPH = "denoiser/1"  # what the graph computes, and its version
INPUTS = {"waveform": "float32 [batch, samples], mono audio at the model's sample_rate",
          "rms": "float32 [batch, 1], RMS of the whole recording (its level gain is computed inside)",
          "floor_db": "float32 [1], most attenuation per bin in dB (model_args.floor_db by default)"}
OUTPUTS = {"denoised": "float32 [batch, samples]",
           "magnitude": "float32 [batch, n_fft/2+1, frames], |Y| of the input",
           "noise_magnitude": "float32, same shape, the predicted |N|, what is subtracted",
           "denoised_magnitude": "float32, same shape, |S| of the output"}


def file_sha256(path):
    """SHA-256 of a file's bytes (an export records its checkpoint's, so the pair is never mixed up)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxDenoiser:
    """An exported denoiser in onnxruntime, behind the runner interface denoise.py uses: .audio, .frame_grid,
    .reach_frames, .level_db, a settable .floor_db, denoise(x, rms) and spectra(x, rms)."""

    def __init__(self, path, threads=None):
        import onnxruntime as ort  # an ImportError tells the caller to fall back or to say what to install
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserError(f"{path} is not a readable ONNX model ({str(e).strip().splitlines()[-1][:120]})") from None
        meta = {}
        for k, v in self.session.get_modelmeta().custom_metadata_map.items():
            try:
                meta[k] = json.loads(v)
            except ValueError:
                meta[k] = v
        if meta.get("graph") != GRAPH:
            raise UserError(f"{path} is not an export of this repo's denoiser (graph {meta.get('graph')!r}, "
                            f"expected {GRAPH!r}); export it again with python export.py")
        self.path, self.meta = Path(path), meta
        self.audio = AudioConfig.from_dict(meta["audio"])
        args = meta["model_args"]
        self.level_db = args["level_db"]
        if "frame_grid" in meta:
            self.frame_grid, self.reach_frames = meta["frame_grid"], meta["reach_frames"]
        else:  # an export of the seed's U-Net made before the metadata held them: UNet.frame_grid, reach_frames
            self.frame_grid = 2 ** args["depth"]
            self.reach_frames = (7 + 2 ** args["temporal_blocks"] - 1) * 2 ** args["depth"]
        self.floor_db = args["floor_db"]

    def _run(self, names, x, rms):
        """The graph on x [batch, n] (float32) with the recording's rms [batch]; inputs shorter than the STFT's
        reflect padding allows are zero-padded (and the padding cut off the waveform again)."""
        n = x.shape[-1]
        short = max(0, self.audio.n_fft // 2 + 1 - n)
        feed = dict(waveform=np.ascontiguousarray(np.pad(x, ((0, 0), (0, short))), dtype=np.float32),
                    rms=np.asarray(rms, dtype=np.float32).reshape(-1, 1),
                    floor_db=np.array([self.floor_db], dtype=np.float32))
        return self.session.run(names, feed)

    def denoise(self, x, rms):
        """x [batch, n] at the model's rate -> denoised [batch, n]."""
        return self._run(["denoised"], x, rms)[0][:, : x.shape[-1]]

    def spectra(self, x, rms):
        """x [1, n] -> |Y|, predicted |N|, |S| [bins, frames], at the recording's level."""
        return [a[0] for a in self._run(["magnitude", "noise_magnitude", "denoised_magnitude"], x, rms)]


def export_of(checkpoint, threads=None):
    """The OnnxDenoiser of checkpoint's export beside it (same name, .onnx), if it was made from this very
    file (its bytes' SHA-256 in the metadata); None if there is none, it is stale or onnxruntime is missing."""
    onnx_path = Path(checkpoint).with_suffix(".onnx")
    if not onnx_path.is_file():
        return None
    try:
        runner = OnnxDenoiser(onnx_path, threads)
    except (ImportError, UserError):
        return None
    return runner if runner.meta.get("checkpoint_sha256") == file_sha256(checkpoint) else None
