"""Fully-connected classifier (the interval-adjoint seed's 784-256-64-10 by default)."""

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten → [Linear → ReLU] per hidden width → Linear.

    Input ``[B, C, S, S]`` (flattened to ``C·S·S`` features), output ``[B, num_classes]``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        hidden: Sequence[int] = (256, 64),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_channels * image_size * image_size
        for width in hidden:
            layers += [nn.Linear(features, int(width)), nn.ReLU(inplace=True)]
            features = int(width)
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
