"""torchvision classification models as ``tv:NAME``, randomly initialised (no downloads)."""

import torch.nn.functional as F
from torch import Tensor, nn

from prune_search.errors import PruneSearchError


class ResizeInput(nn.Module):
    """Bilinearly resizes ``[B, C, H, W]`` inputs to ``size`` px before the wrapped model.

    Used when a dataset's images are smaller than a torchvision model's minimum input size.
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.size = size
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.model(x)


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (usable as ``tv:NAME``)."""
    from torchvision import models

    return sorted(models.list_models(module=models))


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    child_name,
                    nn.Conv2d(
                        in_channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        child.groups if child.groups == 1 else in_channels,
                        child.bias is not None,
                        child.padding_mode,
                    ),
                )
                return
    raise PruneSearchError("the torchvision model has no Conv2d whose input channels can be adapted")


def _min_size(name: str) -> int:
    from torchvision import models

    weights = models.get_model_weights(name)
    sizes = [w.meta.get("min_size", (1, 1))[0] for w in weights]
    return max(sizes, default=1)


def build_torchvision_model(
    name: str, *, in_channels: int, num_classes: int, image_size: int, **options: object
) -> nn.Module:
    """A torchvision classification model adapted to the dataset.

    The first convolution takes ``in_channels``; inputs smaller than the architecture's
    minimum size are resized up to it, and a model built for one size (ViT's ``image_size``,
    224 px unless given as an option) gets its inputs resized to that size (:class:`ResizeInput`).
    Weights are random.
    """
    from torchvision import models

    names = torchvision_names()
    if name not in names:
        raise PruneSearchError(f"unknown torchvision model 'tv:{name}'; valid names are tv:<one of {', '.join(names)}>")
    try:
        model = models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as exc:
        raise PruneSearchError(f"tv:{name} rejected the model options {options}: {exc}") from None
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    fixed = getattr(model, "image_size", None)  # a ViT takes exactly the size it was built for
    if isinstance(fixed, int):
        return model if image_size == fixed else ResizeInput(model, fixed)
    min_size = _min_size(name)
    if image_size < min_size:
        return ResizeInput(model, min_size)
    return model
