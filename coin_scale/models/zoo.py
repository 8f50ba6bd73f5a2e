"""coin-scale's own architectures, registered by name so checkpoints can say which one they hold.

`build(arch, **kwargs)` is to project architectures what `torchvision.models.get_model` is to
torchvision's: `coin_scale.models.loading` tries this registry first when a checkpoint names its
architecture. Every architecture here ends in `avgpool -> flatten -> fc` right after its last
block, so `coin_scale.chain.attribution` attributes logits exactly to that block's units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from coin_scale.errors import close_matches

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
"""Builders by architecture name; fill it with `@register("name")`."""


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to `ARCHITECTURES` under `name`."""

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = builder
        return builder

    return add


def build(arch: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised model of a registered architecture (weights from the global RNG;
    wrap in `torch.random.fork_rng` to seed it)."""
    if arch not in ARCHITECTURES:
        names = sorted(ARCHITECTURES)
        hint = close_matches(arch, names)
        raise ValueError(
            f"unknown coin-scale architecture {arch!r}; "
            + (f"did you mean: {hint}? " if hint else "")
            + f"registered: {', '.join(names)}"
        )
    return ARCHITECTURES[arch](**kwargs)


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
    """`ProbeCNN`: the architecture of the ground-truth probe model (`coin-scale train-probe-model`)."""
    return ProbeCNN(num_classes=num_classes, width=width)


@register("attribute_net")
def attribute_net(*, heads: list[list[Any]], width: int = 128) -> nn.Module:
    """`AttributeNet` (`coin_scale.training.attribute_net`): one logit per scene concept, a
    softmax group per attribute; not a classifier with an avgpool -> fc head."""
    from coin_scale.training.attribute_net import AttributeNet

    return AttributeNet(heads=heads, width=width)


SYNTHETIC_UNITS_ARCH = "synthetic_units"
"""The zoo name of synthetic units: their rows are stored as kind `synthetic`, not `neuron`."""


@register(SYNTHETIC_UNITS_ARCH)
def synthetic_units(**kwargs: Any) -> nn.Module:
    """`SyntheticModel` (`coin_scale.eval.synthetic_model`): synthetic units with known formulas
    computed from pixels through the attribute net; its `units` layer is dissected like neurons."""
    from coin_scale.eval.synthetic_model import SyntheticModel

    return SyntheticModel(**kwargs)
