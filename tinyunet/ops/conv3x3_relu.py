"""3x3 convolution + bias + ReLU, the layer the network runs most (paper sec. 2: "two 3x3
convolutions (unpadded convolutions), each followed by a rectified linear unit (ReLU)").

Shapes:  x (N, C, H, W),  w (F, C, 3, 3),  b (F,)  ->  y (N, F, H - 2, W - 2)

    y = relu(conv3x3(x, w) + b)

Composed from the two readable ops, as CS231n's layer_utils composes conv_relu_forward: the
convolution, then the ReLU in place on its output. Its Numba twin, tinyunet.kernels.conv_relu,
has the same signatures and computes the same numbers on the CPU in row bands
(tests/test_kernels_conv.py checks one against the other); engine.choose_engine picks which
one the network runs.

What the backward pass needs is x (to rebuild the im2col columns: conv3x3.py says why they are
not kept), w and y (y > 0 is the ReLU's mask), so the cache is (x, w, y).
"""
from . import conv3x3, relu


def forward(x, w, b, workspace=None, keep=True):
    """Returns (y, cache); cache = (x, w, y), or None when keep=False (inference).

    `workspace`: an optional backend.Workspace for the im2col columns."""
    z, _ = conv3x3.forward(x, w, b, workspace, keep=False)
    y, _ = relu.forward(z, inplace=True)
    return y, ((x, w, y) if keep else None)


def backward(dy, cache, workspace=None, input_grad=True):
    """dy (N, F, H', W') -> (dx (N, C, H, W), dw (F, C, 3, 3), db (F,)).

    input_grad=False returns None for dx (the network's input layer in training needs none;
    the readable convolution makes it anyway, the kernel skips it)."""
    x, w, y = cache
    dz = relu.backward(dy, y)
    dx, dw, db = conv3x3.backward(dz, (x, w), workspace)
    return (dx if input_grad else None), dw, db
