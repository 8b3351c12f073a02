"""
The model: the seed's U-Net, and the denoiser that wraps it.

    noisy waveform --STFT--> Y --fixed dB scale--> U-Net --> noise estimate N
    magnitude subtraction (default):  |S| = max(|Y| - |N|, floor |Y|),  S = |S| phase(Y)
    complex subtraction:               S = Y - N,  N = M Y with |M| < 1,  |S| >= floor |Y|
    S --iSTFT--> denoised waveform

The U-Net predicts the noise spectrogram, as the seed did, as a fraction of the noisy
spectrum, so that the estimate is always in the range where subtracting it means something:
a magnitude fraction (a sigmoid) that keeps the noisy phase, or, with subtraction="complex", a
complex fraction M (its length squashed by tanh below 1) whose subtraction also corrects the
phase; subtracting the true complex noise gives back the voice exactly. Subtraction happens
inside forward(), so training judges the denoised result rather than the noise image. The
input level is normalised to a fixed RMS and the output scaled back, so the model does not
depend on how loud a recording is.
"""
import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from audio import AudioConfig, db_to_unit, istft, magnitude_to_db, stft
from unet_utils import (BottleneckBlock, DoubleConvLayer, DownSampleLayer, SeparableConv, TemporalBlock, UpSampleLayer,
                        band_matrices)


class UNet(nn.Module):
    """The seed's U-Net with base width and depth as parameters (seed: base 64, depth 4), and optionally
    temporal blocks after the bottleneck (dilations 1, 2, 4, ...: the k-th block sees 2^k more bottleneck
    frames either side, each bottleneck frame being 2^depth input frames)."""

    def __init__(self, in_channels=1, num_classes=1, base_channels=16, depth=4, norm="batch", temporal_blocks=0):
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(depth)]
        self.downs = nn.ModuleList(DownSampleLayer(c_in, c_out, norm)
                                   for c_in, c_out in zip([in_channels] + widths[:-1], widths))
        self.bottleneck = DoubleConvLayer(widths[-1], widths[-1] * 2, norm)
        self.temporal = nn.Sequential(*(TemporalBlock(widths[-1] * 2, 2 ** k, norm) for k in range(temporal_blocks)))
        self.ups = nn.ModuleList(UpSampleLayer(w * 2, w, norm) for w in reversed(widths))
        self.out = nn.Conv2d(base_channels, num_classes, kernel_size=1)
        self.depth = depth

    def forward(self, x):
        # pad height and width up to a multiple of 2^depth (never resize), crop back at the end
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        x = F.pad(x, (0, -w % m, 0, -h % m))
        skips = []
        for down in self.downs:
            skip, x = down(x)
            skips.append(skip)
        x = self.temporal(self.bottleneck(x))
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return self.out(x)[..., :h, :w]

    def frame_grid(self):
        """Frames per step of the coarsest level: chunks that start on this grid see what the whole file would."""
        return 2 ** self.depth

    def reach_frames(self):
        """Frames either side that an output frame depends on: the convolutions', then the temporal blocks' (as
        bottleneck frames), in input frames."""
        return (7 + 2 ** len(self.temporal) - 1) * 2 ** self.depth


class BandUNet(nn.Module):
    """The U-Net made for the CPU: the seed's shape (an encoder that halves the resolution level by level, a
    bottleneck, a decoder that doubles it back, with a skip from each level) on 129 bands instead of 256 bins,
    with separable convolutions, a bottleneck that looks along time (dilations 1, 2, 4, ...) and across all
    bands, and skips that add rather than concatenate. With width C and depth 3:

        [B, 1, 129 bands, T] -conv 5x3, /2 bands-> C x 65 x T -sep 5x3, /2 both-> 2C x 33 x T/2
        -sep 3x3, /2 both-> 4C x 17 x T/4 -blocks-> back up the same levels, adding each skip
        -1x1 to 2 channels, each the value of one of a pair of bands-> [B, 1, 129, T]

    No layer runs on all 129 bands: on two cores a step is bound by memory traffic, and the finest level's
    activations are the most (benchmark.py --what throughput). fine_level adds one (a 3x3 convolution in, a
    refine and the 1x1 head out): slower, and no better per minute of training in the team's runs (MODEL_CARD)."""

    def __init__(self, base_channels=16, depth=3, blocks=4, bands=129, fine_level=False):
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(depth)]
        self.fine = None
        if fine_level:  # a level on all 129 bands: a 3x3 convolution in, a refine and the head out
            c = widths[0]
            self.fine = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            self.inp = SeparableConv(c, c, (5, 3), (2, 1))
            self.fine_up, self.fine_refine = SeparableConv(c, c), SeparableConv(c, c)
        else:
            self.inp = nn.Sequential(nn.Conv2d(1, widths[0], (5, 3), (2, 1), (2, 1), bias=False),
                                     nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.downs = nn.ModuleList(SeparableConv(widths[i], widths[i + 1], (5, 3) if i == 0 else (3, 3), (2, 2))
                                   for i in range(depth - 1))
        coarse = bands
        for _ in range(depth):
            coarse = (coarse + 1) // 2
        self.blocks = nn.Sequential(*(BottleneckBlock(widths[-1], coarse, 2 ** k) for k in range(blocks)))
        self.ups = nn.ModuleList(SeparableConv(widths[i + 1], widths[i]) for i in range(depth - 1))
        self.refine = nn.ModuleList(SeparableConv(widths[i], widths[i]) for i in range(depth - 1))
        self.out = nn.Conv2d(widths[0], 1 if fine_level else 2, 1)  # or two bands' values at each first-level position
        self.bands = bands

    def forward(self, x):
        t, m = x.shape[-1], self.frame_grid()
        fine = None
        if self.fine is not None:
            x = fine = F.pad(self.fine(x), (0, -t % m))
        x = F.pad(self.inp(x), (0, -x.shape[-1] % m))
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        x = self.blocks(x)
        for i in reversed(range(len(self.downs))):  # back up: fewer channels, then twice the bands and frames, + skip
            skip = skips[i]
            x = F.interpolate(self.ups[i](x), scale_factor=2.0, mode="nearest")
            x = self.refine[i](x[..., :skip.shape[-2], :skip.shape[-1]] + skip)
        if fine is not None:
            x = F.interpolate(self.fine_up(x), scale_factor=(2.0, 1.0), mode="nearest")
            return self.out(self.fine_refine(x[..., :fine.shape[-2], :] + fine))[..., :t]
        y = self.out(x)  # [B, 2, ceil(bands / 2), T]: channel k holds band 2 j + k
        return y.transpose(1, 2).reshape(len(y), 1, -1, y.shape[-1])[:, :, :self.bands, :t]

    def frame_grid(self):
        return 2 ** len(self.downs)

    def reach_frames(self):
        """Frames either side an output frame may depend on, an upper bound: at each level its 3-frame down, up and
        refine kernels and the nearest upsampling's shift (6 frames of that level's scale), the input convolution,
        and the blocks' dilations at the coarsest level (tests/test_unet.py checks it against the gradient)."""
        scales = [2 ** i for i in range(len(self.downs))]
        coarsest = 2 ** len(self.downs)
        return 1 + sum(6 * s for s in scales) + coarsest * (2 ** len(self.blocks) - 1) + (6 if self.fine else 0)


def level_gain(noisy, target_db):
    """Per-clip gain that brings the noisy input to target_db RMS (dBFS); [B, n] -> [B, 1]."""
    return gain_from_rms(noisy.pow(2).mean(-1, keepdim=True).sqrt(), target_db)


def gain_from_rms(rms, target_db):
    """The gain that brings audio of this RMS to target_db dBFS (silence: a gain that cannot overflow)."""
    return 10 ** (target_db / 20) / rms.clamp_min(1e-5)


def subtraction_gain(mag, noise_mag, floor):
    """Magnitude subtraction as a real gain on Y: max(|Y| - |N|, floor |Y|) / |Y|."""
    return torch.maximum(mag - noise_mag, floor * mag) / mag.clamp_min(1e-20)


def subtract_noise(spec, noise_mag, floor, mag=None):
    """Spectral subtraction with a floor, keeping the noisy phase: |S| = max(|Y| - |N|, floor |Y|)."""
    return spec * subtraction_gain(spec.abs() if mag is None else mag, noise_mag, floor)


def subtract_complex_parts(y_re, y_im, n_re, n_im, floor):
    """Complex subtraction with a floor on real and imaginary parts (the form an ONNX graph takes): S = Y - N,
    its magnitude raised to floor |Y| where it falls below (keeping S's phase; Y's where S is zero). (Re, Im) of S."""
    s_re, s_im = y_re - n_re, y_im - n_im
    mag = (s_re ** 2 + s_im ** 2).clamp_min(1e-40).sqrt()
    y_mag = (y_re ** 2 + y_im ** 2).clamp_min(1e-40).sqrt()
    low, zero = floor * y_mag, mag <= 1e-20
    lift_re = torch.where(zero, y_re / y_mag, s_re / mag) * low
    lift_im = torch.where(zero, y_im / y_mag, s_im / mag) * low
    raise_ = mag < low
    return torch.where(raise_, lift_re, s_re), torch.where(raise_, lift_im, s_im)


def subtract_complex_noise(spec, noise, floor):
    """subtract_complex_parts on complex tensors."""
    return torch.complex(*subtract_complex_parts(spec.real, spec.imag, noise.real, noise.imag, floor))


@dataclass
class ModelConfig:
    """The model's settings, saved in every checkpoint (as ckpt["model_args"]). floor_db is also the one
    runtime setting: model.config.floor_db = -12 keeps more background (denoise.py --floor-db)."""
    base_channels: int = 16  # U-Net width (the seed used 64)
    depth: int = 4  # U-Net levels, as the seed
    norm: str = "batch"  # batch or none
    floor_db: float = -60.0  # the most attenuation any bin gets, in dB
    level_db: float = -25.0  # the RMS level (dBFS) the input is brought to before the STFT
    subtraction: str = "magnitude"  # magnitude (noisy phase kept) or complex
    temporal_blocks: int = 0  # dilated blocks along time after the bottleneck (0: the seed's U-Net)
    arch: str = "unet"  # unet: the seed's U-Net on all 256 bins; bands: the band U-Net (BandUNet) on 129 bands
    fine_level: bool = False  # bands: a level on all 129 bands too (the first halving after a convolution there)

    def __post_init__(self):
        if self.subtraction not in ("magnitude", "complex"):
            raise ValueError(f"unknown subtraction {self.subtraction!r} (choose magnitude or complex)")
        if self.arch not in ("unet", "bands"):
            raise ValueError(f"unknown arch {self.arch!r} (choose unet or bands)")
        if self.arch == "bands" and (self.subtraction != "magnitude" or self.norm != "batch"):
            raise ValueError("the band U-Net subtracts magnitudes, with BatchNorm")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """From a checkpoint's model_args (older ones lack subtraction: magnitude); unknown keys are an error."""
        return cls(**d)


MODEL_DEFAULTS = {f.name: f.default for f in fields(ModelConfig)}
BAND_DEFAULTS = dict(base_channels=16, depth=3, temporal_blocks=4)  # the band U-Net's size: 28 k parameters
BAND_HOP = 256  # the band U-Net's STFT hop at n_fft 512 (50% overlap, as GTCRN and UL-UNAS): half the frames


def model_defaults(arch):
    """ModelConfig's defaults for an architecture (the band U-Net has its own width, depth and blocks)."""
    return dict(MODEL_DEFAULTS, arch=arch, **(BAND_DEFAULTS if arch == "bands" else {}))


class NoiseSubtractionDenoiser(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig(), audio: AudioConfig = AudioConfig()):
        super().__init__()
        self.config = replace(config)  # a copy: setting the floor on one model leaves others alone
        self.audio = audio
        complex_ = config.subtraction == "complex"  # in: dB magnitude (+ cos, sin of the phase); out: fraction (Re, Im)
        if config.arch == "bands":
            fold, unfold = band_matrices(audio.n_fft, audio.sample_rate)
            self.register_buffer("fold", fold, persistent=False)  # derived from the audio settings, not saved
            self.register_buffer("unfold", unfold, persistent=False)
            self.unet = BandUNet(config.base_channels, config.depth, config.temporal_blocks, len(fold), config.fine_level)
        else:
            self.unet = UNet(3 if complex_ else 1, 2 if complex_ else 1, config.base_channels, config.depth,
                             config.norm, config.temporal_blocks)

    @property
    def subtraction(self):
        return self.config.subtraction

    def frame_grid(self):
        """STFT frames per step of the network's coarsest level: a chunk that starts on this grid is seen as the
        whole file would see it (denoise.py's chunks)."""
        return self.unet.frame_grid()

    def reach_frames(self):
        """STFT frames either side that an output frame may depend on."""
        return self.unet.reach_frames()

    @property
    def level_db(self):
        return self.config.level_db

    @property
    def floor(self):
        """The floor as an amplitude fraction of |Y| (from config.floor_db)."""
        return 10 ** (self.config.floor_db / 20)

    def noise_fraction(self, mag):
        """|Y| [B, bins, frames] -> predicted noise as a fraction of |Y|, same shape."""
        if self.config.arch == "bands":  # the bands' RMS level on the dB scale in, a fraction per band out, unfolded
            band_mag = torch.matmul(self.fold, mag.float().pow(2)).sqrt()
            x = db_to_unit(magnitude_to_db(band_mag, self.audio), self.audio)
            return torch.matmul(self.unfold, torch.sigmoid(self.unet(x[:, None]).float())[:, 0])
        x = db_to_unit(magnitude_to_db(mag[:, : self.audio.n_bins], self.audio), self.audio)
        frac = torch.sigmoid(self.unet(x[:, None]))[:, 0]
        return torch.cat([frac, frac[:, -1:]], dim=1)  # the Nyquist bin follows its neighbour

    def noise_mask(self, spec_ri):
        """Y as (Re, Im) [B, 2, bins, frames] -> the complex fraction M with N = M Y, as (Re, Im), |M| < 1."""
        nb = self.audio.n_bins
        mag = spec_ri.pow(2).sum(1).sqrt()
        unit = db_to_unit(magnitude_to_db(mag[:, :nb], self.audio), self.audio)
        phase = spec_ri[:, :, :nb] / mag[:, None, :nb].clamp_min(1e-20)  # cos, sin (0, 0 in silent bins)
        m = self.unet(torch.cat([unit[:, None], phase], dim=1)).float()  # float32 under autocast too
        length = m.pow(2).sum(1, keepdim=True).add(1e-12).sqrt()
        m = m * (torch.tanh(length) / length)
        return torch.cat([m, m[:, :, -1:]], dim=2)  # the Nyquist bin follows its neighbour

    def forward(self, noisy, gain=None, with_gain=False):
        """noisy [B, n] -> (denoised [B, n], predicted noise magnitude |N| [B, bins, frames]); with_gain, also the
        spectral gain G [B, bins, frames] with denoised spectrum S = G Y (real for magnitude subtraction, complex for
        complex subtraction), which the loss applies to the true noise to see how much of it gets through."""
        if gain is None:
            gain = level_gain(noisy, self.level_db)
        spec = stft(noisy * gain, self.audio)
        if self.subtraction == "complex":
            m = self.noise_mask(torch.stack([spec.real, spec.imag], dim=1))
            noise = torch.complex(m[:, 0], m[:, 1]) * spec
            clean_spec, noise_mag = subtract_complex_noise(spec, noise, self.floor), noise.abs()
        else:
            mag = spec.abs()
            noise_mag = self.noise_fraction(mag) * mag
            clean_spec = subtract_noise(spec, noise_mag, self.floor, mag)
        out = istft(clean_spec, self.audio, noisy.shape[-1]) / gain, noise_mag / gain[..., None]
        if not with_gain:
            return out
        gain_spec = clean_spec * spec.conj() / spec.abs().pow(2).clamp_min(1e-30)
        return *out, gain_spec if self.subtraction == "complex" else gain_spec.real  # the noisy phase kept: G real


def build_model(model_args, audio_dict):
    """The (untrained) model a checkpoint's model_args and audio describe."""
    return NoiseSubtractionDenoiser(ModelConfig.from_dict(model_args), AudioConfig.from_dict(audio_dict))


def complex_from_magnitude(model):
    """A complex-subtraction model that starts from a magnitude model's U-Net: every layer copied, the first
    convolution's two new input channels (cos, sin of the phase) and the head at zero. The head starts at
    zero because the two heads map logits differently (a sigmoid against tanh of a length): at the start
    M = 0 and the model passes its input through; training then teaches the head on the learned features."""
    if model.subtraction != "magnitude":
        raise ValueError("complex_from_magnitude needs a magnitude-subtraction model")
    new = NoiseSubtractionDenoiser(replace(model.config, subtraction="complex"), model.audio)
    state = new.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("unet.out."):
            state[k] = torch.zeros_like(state[k])
        elif state[k].shape == v.shape:
            state[k] = v
        else:  # the first convolution: [out, 1, 3, 3] -> [out, 3, 3, 3]
            state[k] = torch.cat([v, v.new_zeros(v.shape[0], state[k].shape[1] - v.shape[1], *v.shape[2:])], dim=1)
    new.load_state_dict(state)
    return new


def with_temporal_blocks(model, n):
    """The same denoiser with n temporal blocks: every existing layer copied, the blocks it lacks new, each
    starting as the identity (unet_utils.TemporalBlock), so the result denoises exactly as model does."""
    if n < model.config.temporal_blocks:
        raise ValueError(f"the model already has {model.config.temporal_blocks} temporal blocks")
    new = NoiseSubtractionDenoiser(replace(model.config, temporal_blocks=n), model.audio)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("unet.temporal.") for k in missing), (missing, unexpected)
    return new


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def describe(model):
    a = model.config
    if a.arch == "bands":
        return (f"band U-Net width {a.base_channels} depth {a.depth}{' + fine level' if a.fine_level else ''} + "
                f"{a.temporal_blocks} bottleneck blocks, "
                f"{count_parameters(model) / 1e3:.1f} k parameters, magnitude subtraction, floor {a.floor_db:g} dB")
    temporal = f" + {a.temporal_blocks} temporal blocks" if a.temporal_blocks else ""
    return (f"U-Net base {a.base_channels} depth {a.depth} norm {a.norm}{temporal}, "
            f"{count_parameters(model) / 1e6:.2f} M parameters, {model.subtraction} subtraction, floor {a.floor_db:g} dB")


if __name__ == "__main__":  # quick look: python unet.py
    m = NoiseSubtractionDenoiser()
    print(describe(m))
    x = torch.randn(2, m.audio.sample_rate)
    y, n = m(x)
    print("in", tuple(x.shape), "out", tuple(y.shape), "noise", tuple(n.shape))
    assert math.isfinite(y.abs().sum().item())
