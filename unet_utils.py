"""
The U-Net's building blocks, as in the seed: a double 3x3 convolution, a down step
(double conv, then 2x2 max-pool, keeping the pre-pool features for the skip), and an
up step (2x2 transposed convolution, concatenate the skip, double conv). One addition:
a residual block that looks further along time at the bottleneck (a dilated 1x3 convolution).
"""
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
