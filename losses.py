"""
The training loss, on the denoised result (train.py trains with it, benchmark.py times it).

    L = (1 - w) mean| |C(est)| - |C(voice)| |  +  w mean|C(est) - C(voice)|  -  sisdr_weight SI-SDR(est, voice)
        + mr_weight        the first term again at STFT sizes 256 and 1024 (hop n_fft/4), averaged
        + residual_weight  mean|C(G N)|

C(x) = |X|^0.3 e^(j angle X) is the power-law compressed STFT; the first term compares compressed
magnitudes, the second (weight w = complex_weight) compressed complex values, so that a wrong phase
left in a bin counts; means over bins. The multi-resolution term sees the same error with finer time
(256) and finer frequency (1024) resolution than the model's own STFT. The last term is the noise
that gets through: G is the model's spectral gain (its output is S = G Y) and N the true noise's STFT,
so G N is the residual noise in the output, the part of the error that listeners, PESQ and DNSMOS BAK
hear in speech pauses; the first terms weigh it alike with speech distortion, this term adds weight
to it alone. All signals are first brought to the model's input level.
"""
from dataclasses import dataclass, replace

import torch

from audio import si_sdr, stft
from unet import level_gain

MR_SIZES = (256, 1024)  # the multi-resolution term's STFT sizes (the model's own is AudioConfig.n_fft)


@dataclass(frozen=True)
class LossWeights:
    complex: float = 0.0  # share of the compressed L1 on complex values rather than magnitudes
    sisdr: float = 0.01  # weight of -SI-SDR (dB)
    mr: float = 0.0  # weight of the compressed magnitude L1 at the other STFT sizes
    residual: float = 0.0  # weight of the compressed residual noise |C(G N)|

    @classmethod
    def from_args(cls, args):
        return cls(args.complex_weight, args.sisdr_weight, getattr(args, "mr_weight", 0.0),
                   getattr(args, "residual_weight", 0.0))


def compress(spec):
    """|X|^0.3 with the phase kept: |X|^0.3 e^(j angle X)."""
    return spec * (spec.abs() + 1e-6) ** -0.7


def compressed_stft(x, audio):
    return compress(stft(x, audio))


def loss_fn(model, noisy, voice, weights=LossWeights(), amp_dtype=None):
    """(loss, denoised) for a batch: the model runs under autocast in amp_dtype (None: float32), the loss in float32."""
    with torch.autocast(noisy.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        est, _, *gain = model(noisy, with_gain=weights.residual > 0)  # the spectral gain only where a term reads it
    est = est.float()
    raw = getattr(model, "module", model)  # through DistributedDataParallel
    g = level_gain(noisy, raw.level_db)
    e, c = est * g, voice * g
    ce, cc = compressed_stft(e, raw.audio), compressed_stft(c, raw.audio)
    loss = (1 - weights.complex) * (ce.abs() - cc.abs()).abs().mean() + weights.complex * (ce - cc).abs().mean()
    loss = loss - weights.sisdr * si_sdr(e, c).mean()
    if weights.mr:
        sizes = [replace(raw.audio, n_fft=n, hop_length=n // 4) for n in MR_SIZES]
        loss = loss + weights.mr * sum((compressed_stft(e, a).abs() - compressed_stft(c, a).abs()).abs().mean()
                                       for a in sizes) / len(sizes)
    if weights.residual:
        gain = gain[0]
        residual = gain.to(torch.complex64 if gain.is_complex() else torch.float32) * stft((noisy - voice) * g, raw.audio)
        loss = loss + weights.residual * compress(residual).abs().mean()
    return loss, est
