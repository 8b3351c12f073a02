"""
The training loss, on the denoised result (train.py trains with it, benchmark.py times it).

    L = (1 - w) |  |C(est)| - |C(voice)|  |  +  w | C(est) - C(voice) |  -  sisdr_weight SI-SDR(est, voice)

C(x) = |X|^0.3 e^(j angle X) is the power-law compressed STFT; the first term compares compressed
magnitudes, the second (weight w = complex_weight) compressed complex values, so that a wrong phase
left in a bin counts; means over bins. Both signals are first brought to the model's input level.
"""
import torch

from audio import si_sdr, stft
from unet import level_gain


def compressed_stft(x, audio):
    """STFT with magnitudes raised to 0.3 and the phase kept: |X|^0.3 e^(j angle X)."""
    spec = stft(x, audio)
    return spec * (spec.abs() + 1e-6) ** -0.7


def loss_fn(model, noisy, voice, complex_weight, sisdr_weight, amp_dtype=None):
    """(loss, denoised) for a batch: the model runs under autocast in amp_dtype (None: float32), the loss in float32."""
    with torch.autocast(noisy.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        est, _ = model(noisy)
    est = est.float()
    raw = getattr(model, "module", model)  # through DistributedDataParallel
    g = level_gain(noisy, raw.level_db)
    e, c = est * g, voice * g
    ce, cc = compressed_stft(e, raw.audio), compressed_stft(c, raw.audio)
    mag = (ce.abs() - cc.abs()).abs().mean()
    cplx = (ce - cc).abs().mean()
    sdr = si_sdr(e, c).mean()
    return (1 - complex_weight) * mag + complex_weight * cplx - sisdr_weight * sdr, est
