"""The probe CNN: the small normalisation-free ResNet coin-scale trains on rendered scenes, a
model with known ground truth (`coin-scale train-probe-cnn`), and its body, which the attribute
net shares. Like every classifier the engine attributes exactly, it ends in
`avgpool -> flatten -> fc` right after its last block."""

from __future__ import annotations

import torch
from torch import nn

from coin_scale.models.zoo import register

RESIDUAL_INIT_SCALE = 0.1
"""Factor on the He-initialised weights of each block's second conv."""


class BasicBlock(nn.Module):
    """ResNet's basic block without normalisation: two 3x3 convs with biases and a (projected)
    shortcut, then ReLU. The second conv starts small, so the block starts near its shortcut
    (Fixup-style); BatchNorm is left out because its CPU training kernels in channels_last are
    several times slower than these convolutions."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        with torch.no_grad():
            self.conv2.weight.mul_(RESIDUAL_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.downsample(x))


class ProbeCNN(nn.Module):
    """A small normalisation-free ResNet for 48-96 px scenes: stem, layer1..4, avgpool, fc.

    At 64 px: stem -> (16, 32, 32), layer1 -> (32, 16, 16), layer2 -> (64, 8, 8),
    layer3 -> (96, 8, 8), layer4 -> (width, 4, 4), fc -> (num_classes,).
    """

    def __init__(self, num_classes: int = 10, width: int = 128) -> None:
        super().__init__()
        if num_classes < 2 or width < 8:
            raise ValueError(
                f"ProbeCNN needs num_classes >= 2 and width >= 8; got {num_classes}, {width}"
            )
        add_probe_body(self, width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(probe_body(self, x)), 1))


def add_probe_body(module: nn.Module, width: int) -> None:
    """The probe CNN's stem and four blocks, as `module.stem` and `module.layer1..layer4` (their
    names are the layer names users dissect; a net built on them shares the probe CNN's layers)."""
    stem_conv = nn.Conv2d(3, 16, 3, 2, 1)
    nn.init.kaiming_normal_(stem_conv.weight, nonlinearity="relu")
    module.stem = nn.Sequential(stem_conv, nn.ReLU(inplace=True))
    module.layer1 = BasicBlock(16, 32, stride=2)
    module.layer2 = BasicBlock(32, 64, stride=2)
    module.layer3 = BasicBlock(64, 96, stride=1)
    module.layer4 = BasicBlock(96, width, stride=2)


def probe_body(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run the blocks `add_probe_body` added: images -> layer4's maps."""
    for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
        x = getattr(module, name)(x)
    return x


@register("probe_cnn")
def probe_cnn(*, num_classes: int = 10, width: int = 128) -> nn.Module:
    """`ProbeCNN`: the architecture of the ground-truth probe CNN (`coin-scale train-probe-cnn`)."""
    return ProbeCNN(num_classes=num_classes, width=width)
