"""The hand-written ops, one per file: `forward(...)` returns (y, cache) and keeps only what
`backward(dy, cache)` needs; shapes in each docstring (N batch, C channels, H/W height/width,
F filters, K classes). They run on NumPy or CuPy from the same code (backend.get_array_module).

    conv3x3                 3x3 valid convolution through im2col
    relu                    max(x, 0)
    conv3x3_relu            the two composed: the layer the network runs most
    max_pool2x2             2x2 max pooling, stride 2
    up_conv2x2              2x2 up-convolution (transposed, stride 2)
    crop_and_concat         centre crop of the skip map, channel concatenation
    conv1x1                 1x1 convolution to K classes
    dropout                 inverted dropout
    softmax_cross_entropy   pixel-wise softmax and the weighted cross-entropy (eq. 1)
    updates                 the optimizers' and the moving average's parameter updates

The slow, obvious versions they are tested against are in tests/reference.py.
"""
from . import (conv1x1, conv3x3, conv3x3_relu, crop_and_concat, dropout, max_pool2x2, relu,
               softmax_cross_entropy, up_conv2x2, updates)

__all__ = ["conv1x1", "conv3x3", "conv3x3_relu", "crop_and_concat", "dropout", "max_pool2x2",
           "relu", "softmax_cross_entropy", "up_conv2x2", "updates"]
