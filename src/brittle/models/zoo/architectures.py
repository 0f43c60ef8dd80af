"""Architectures of the bundled zoo (small enough to attack on two CPU cores)."""

from __future__ import annotations

from torch import nn


def mnist_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """The small MNIST CNN of Wong & Kolter (2018): two stride-2 convolutions and two dense layers.

    About 166k parameters; only Conv2d / ReLU / Flatten / Linear, so bound propagation applies.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def mlp(in_features: int = 64, hidden: tuple[int, ...] = (32, 32), num_classes: int = 10) -> nn.Sequential:
    """A fully connected ReLU network on flattened inputs (exact margins by MILP are tractable when small)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def mnist_bn_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """A small MNIST CNN with BatchNorm after every hidden layer (test-time adaptation needs BatchNorm).

    Three convolutions (3x3, then two stride-2 4x4) and a dense layer, each followed by BatchNorm and ReLU,
    then the linear head: four BatchNorm layers (three ``BatchNorm2d``, one ``BatchNorm1d``), about 183k
    parameters. In eval mode BatchNorm is affine, so attacks and bound propagation still apply.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), nn.BatchNorm1d(100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


ARCHITECTURES = {"mnist_cnn": mnist_cnn, "mlp": mlp, "mnist_bn_cnn": mnist_bn_cnn}
