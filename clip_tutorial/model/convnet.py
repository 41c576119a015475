"""The small convolutional stack of the book's image classifiers that are not CLIP.

Explained in Chapter 1.2 (the fixed-class CNN, the baseline CLIP is compared with) and Chapter 7.5
(the attribute judge of generated pictures): both are this stack followed by global average pooling
and linear heads.
"""
from __future__ import annotations

from torch import nn

from clip_tutorial.core.checks import check_positive_int

__all__ = ["conv_pool_stack"]


def conv_pool_stack(width: int, stages: int) -> tuple[nn.Sequential, int]:
    """``stages`` blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling; the width doubles each block.

    Explained in Chapter 1.2. Takes RGB images; each block halves the side, so an image of side ``S``
    leaves it with side ``S / 2**stages``. Returns the stack and its number of output channels,
    ``width * 2**(stages - 1)``.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if an argument is below 1.
    """
    width, stages = check_positive_int("width", width), check_positive_int("stages", stages)
    sizes = [3] + [width * 2 ** i for i in range(stages)]
    stack = nn.Sequential(*[layer for cin, cout in zip(sizes, sizes[1:]) for layer in (
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2))])
    return stack, sizes[-1]
