"""
The U-Net's building blocks.

The seed's full-resolution U-Net (arch "unet"): a double 3x3 convolution, a down step (double conv,
then 2x2 max-pool, keeping the pre-pool features for the skip), and an up step (2x2 transposed
convolution, concatenate the skip, double conv); and a residual block that looks further along time
at the bottleneck (a dilated 1x3 convolution).

The band U-Net (arch "bands", unet.BandUNet) is made of cheaper pieces: the fixed band matrices that
fold 257 STFT bins into 129 bands and unfold them again (band_matrices), a separable convolution
(depthwise, then pointwise), and a bottleneck block that looks along time (dilated) and across
bands (a learned mixing of all bands).
"""
import numpy as np
import torch
import torch.nn as nn


def norm_layer(kind, channels):
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (choose batch or none)")


class DoubleConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, norm="batch"):
        super().__init__()
        bias = norm == "none"  # a bias right before BatchNorm is redundant
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv(x)


class DownSampleLayer(nn.Module):
    def __init__(self, in_channels, out_channels, norm="batch"):
        super().__init__()
        self.conv = DoubleConvLayer(in_channels, out_channels, norm)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        down = self.conv(x)
        return down, self.pool(down)


class UpSampleLayer(nn.Module):
    def __init__(self, in_channels, out_channels, norm="batch"):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConvLayer(in_channels, out_channels, norm)

    def forward(self, x, skip):
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class TemporalBlock(nn.Module):
    """ReLU(x + norm(conv(x))), the conv 1x3 along time with the given dilation, as a ResNet block: each
    block lets the bottleneck see `dilation` more of its frames either side. The scale starts at zero
    (BatchNorm's weight, or the conv's weight and bias without norm): the input comes from a ReLU, so a
    new block starts as the identity and a trained U-Net can take blocks on without changing what it does."""

    def __init__(self, channels, dilation, norm="batch"):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=(1, 3), padding=(0, dilation),
                              dilation=(1, dilation), bias=norm == "none")
        self.norm = norm_layer(norm, channels)
        for scale in (self.norm.weight,) if norm == "batch" else (self.conv.weight, self.conv.bias):
            nn.init.zeros_(scale)

    def forward(self, x):
        return torch.relu(x + self.norm(self.conv(x)))


# ----------------------------------------------------------------------------- the band U-Net's pieces
def hz_to_erb(hz):
    return 21.4 * np.log10(1 + 0.00437 * hz)


def erb_to_hz(erb):
    return (10 ** (erb / 21.4) - 1) / 0.00437


def band_matrices(n_fft, sample_rate, linear_hz=2000.0, erb_bands=64):
    """(fold [bands, bins], unfold [bins, bands]) for the rfft's n_fft/2 + 1 bins: every bin below linear_hz is a
    band of its own, the rest are erb_bands bands evenly spaced on the ERB scale up to Nyquist (GTCRN's and
    UL-UNAS's layout: 65 + 64 = 129 bands at n_fft 512, 16 kHz). unfold interpolates linearly between band
    centres (its rows sum to 1: a value shared by all bands comes back in every bin); fold averages the bins
    each band covers, weighted alike (its rows sum to 1: a flat spectrum keeps its level)."""
    bins = n_fft // 2 + 1
    low = int(linear_hz * n_fft / sample_rate) + 1  # bins 0 .. low-1 stay as they are
    hz = np.arange(bins) * sample_rate / n_fft
    centres = erb_to_hz(np.linspace(hz_to_erb(hz[low - 1]), hz_to_erb(sample_rate / 2), erb_bands + 1))[1:]
    centres = np.concatenate([hz[:low], centres])  # every band's centre frequency, rising
    unfold = np.zeros((bins, len(centres)))
    for b, f in enumerate(hz):
        k = min(np.searchsorted(centres, f, side="right"), len(centres) - 1)  # the first centre above f
        lo, hi = centres[k - 1], centres[k]
        w = np.clip((f - lo) / (hi - lo), 0, 1)
        unfold[b, k - 1] += 1 - w
        unfold[b, k] += w
    fold = unfold.T / unfold.sum(0)[:, None]
    return torch.tensor(fold, dtype=torch.float32), torch.tensor(unfold, dtype=torch.float32)


class SeparableConv(nn.Module):
    """A depthwise convolution (each channel its own kernel over bands x frames, with a stride and a dilation),
    then a pointwise one that mixes the channels, BatchNorm and ReLU: about kernel + c_out multiply-adds per
    channel and position where a full convolution takes kernel x c_out."""

    def __init__(self, c_in, c_out, kernel=(3, 3), stride=(1, 1), dilation=(1, 1)):
        super().__init__()
        pad = tuple((k - 1) // 2 * d for k, d in zip(kernel, dilation))
        self.depthwise = nn.Conv2d(c_in, c_in, kernel, stride, pad, dilation, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.norm(self.pointwise(self.depthwise(x))))


class BandMixer(nn.Module):
    """x + ReLU(BN(x @ W)), W a learned [bands, bands] matrix shared by all channels: every band hears every
    other one (a harmonic's partials, a noise's whole spectrum) for bands^2 multiply-adds a channel and frame."""

    def __init__(self, channels, bands):
        super().__init__()
        self.mix = nn.Parameter(torch.eye(bands) + 0.01 * torch.randn(bands, bands))
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        nn.init.zeros_(self.norm.weight)  # starts as the identity

    def forward(self, x):  # [B, C, bands, frames]
        mixed = torch.matmul(x.transpose(2, 3), self.mix).transpose(2, 3)  # sum over f of x[..., f, t] mix[f, g]
        return x + self.act(self.norm(mixed))


class BottleneckBlock(nn.Module):
    """Along time, then across bands: a residual separable convolution 1 x 3 along frames with the given dilation
    (each block sees `dilation` more frames either side), then a BandMixer."""

    def __init__(self, channels, bands, dilation):
        super().__init__()
        self.time = SeparableConv(channels, channels, (1, 3), dilation=(1, dilation))
        self.bands = BandMixer(channels, bands)
        nn.init.zeros_(self.time.norm.weight)  # starts as the identity

    def forward(self, x):
        return self.bands(x + self.time(x))
