"""VGG-16 with BatchNorm for CIFAR-size inputs, with a choice of classifier head."""

from torch import Tensor, nn

VGG16_LAYOUT: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)

HEADS = ("4096", "512", "linear")


def _classifier(features: int, num_classes: int, head: str) -> nn.Sequential:
    if head == "4096":
        hidden = [4096, 4096]
    elif head == "512":
        hidden = [512]
    elif head == "linear":
        hidden = []
    else:
        raise ValueError(f"vgg16_bn head must be one of {', '.join(HEADS)}; got {head!r}")
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True), nn.Dropout(0.5)]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


class VGG16BN(nn.Module):
    """13 × [Conv3×3 (bias) → BN → ReLU] in five stages, then a classifier head.

    Input ``[B, in_channels, S, S]``, output ``[B, num_classes]``. A stage's 2×2 max-pool is
    skipped once the feature map is 1 px, so 8 px (digits) and 28 px (Fashion-MNIST) inputs
    work; the map is then averaged to ``[B, 512·width_mult]``.

    ``head``: ``"4096"`` is the seed project's 512→4096→4096→classes head (ReLU + dropout),
    ``"512"`` the common 512→512→classes head, ``"linear"`` a single 512→classes layer.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        head: str = "4096",
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in VGG16_LAYOUT:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            width = max(1, round(int(item) * width_mult))
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _classifier(channels, num_classes, str(head))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
