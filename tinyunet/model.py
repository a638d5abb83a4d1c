"""The U-Net of Ronneberger, Fischer and Brox (2015), fig. 1, built from the hand-written ops.

Contracting path: `depth` times [3x3 conv, ReLU, 3x3 conv, ReLU, 2x2 max pool], channels doubling
from `base_channels` (64 -> 1024 for the paper). Bottom: two 3x3 convs (+ dropout). Expanding path:
`depth` times [2x2 up-conv halving the channels, crop-and-concat with the skip map, two 3x3 convs].
Last: a 1x1 conv to K classes. Defaults give the paper's 23 convolutions, 31,030,658 parameters
and a 388x388 output for a 572x572 tile.

Parameter names, in forward order (PyTorch layouts, so weights can be exchanged):
    down{i}.conv{1,2}.{weight,bias}    i = 0 .. depth-1   weight (F, C, 3, 3)
    bottom.conv{1,2}.{weight,bias}
    up{i}.upconv.{weight,bias}         i = depth-1 .. 0   weight (C, C/2, 2, 2)
    up{i}.conv{1,2}.{weight,bias}
    out.{weight,bias}                                     weight (K, base, 1, 1)
"""
from collections import OrderedDict, namedtuple

import numpy as np

from . import backend
from .engine import choose_engine
from .ops import conv1x1, dropout
from .ops.softmax_cross_entropy import softmax


# The network's geometry, written once: fig. 1's layers in forward order, each with the level of
# the U it works at (0 at the top, depth at the bottom) and its channels in and out. UNet makes its
# parameters from it; the sizes (`walk`), output_size, crop_margins, the figures' feature maps
# (diagrams.py) and the memory estimate (infer.forward_memory) read it.
Layer = namedtuple("Layer", "name op level c_in c_out")
OPS = ("conv3x3", "max_pool", "dropout", "up_conv", "crop_and_concat", "conv1x1")


def layers(in_channels=1, n_classes=2, base_channels=64, depth=4):
    """[Layer] of a U-Net, in forward order (the parameters' names and order: module docstring).

    conv3x3: a 3x3 valid convolution + ReLU (c_out filters); max_pool: 2x2, stride 2, into level
    + 1; dropout: the end of the contracting path; up_conv: 2x2 up-convolution (c_in -> c_out =
    c_in / 2 channels, level: the one it goes up to); crop_and_concat: the skip map of its level
    (c_out - c_in channels) put before the upsampled map (c_in channels); conv1x1: to K classes."""
    ch = [base_channels * 2 ** i for i in range(depth + 1)]     # 64, 128, ..., 1024
    net, c = [], in_channels
    for i in range(depth):                                      # contracting path
        net += [Layer(f"down{i}.conv1", "conv3x3", i, c, ch[i]),
                Layer(f"down{i}.conv2", "conv3x3", i, ch[i], ch[i]),
                Layer(f"down{i}.pool", "max_pool", i + 1, ch[i], ch[i])]
        c = ch[i]
    net += [Layer("bottom.conv1", "conv3x3", depth, ch[depth - 1], ch[depth]),
            Layer("bottom.conv2", "conv3x3", depth, ch[depth], ch[depth]),
            # paper sec. 3.1: "drop-out layers at the end of the contracting path"
            Layer("bottom.dropout", "dropout", depth, ch[depth], ch[depth])]
    for i in reversed(range(depth)):                            # expanding path
        net += [Layer(f"up{i}.upconv", "up_conv", i, ch[i + 1], ch[i]),
                Layer(f"up{i}.concat", "crop_and_concat", i, ch[i], 2 * ch[i]),
                Layer(f"up{i}.conv1", "conv3x3", i, 2 * ch[i], ch[i]),
                Layer(f"up{i}.conv2", "conv3x3", i, ch[i], ch[i])]
    net.append(Layer("out", "conv1x1", 0, ch[0], n_classes))
    return net


def is_skip(name):
    """Whether the layer named `name` makes a skip map: the last 3x3 conv of a level of the
    contracting path, whose output that level's crop_and_concat reads."""
    return name.startswith("down") and name.endswith("conv2")


def walk(h, depth=4):
    """[(Layer, size in, size out)] of a U-Net of `depth` (the channels of base 1) for an h x h
    input, or None if h does not fit: a 3x3 conv loses 2 px, a pool needs an even size, an
    up-conv doubles, a concatenation needs a skip map at least as large, by an even margin."""
    steps, s, skips = [], h, {}
    for layer in layers(depth=depth, base_channels=1):
        s_in = s
        if layer.op == "conv3x3":
            s -= 2
            if s < 1:
                return None
            if is_skip(layer.name):
                skips[layer.level] = s
        elif layer.op == "max_pool":
            if s < 2 or s % 2:
                return None
            s //= 2
        elif layer.op == "up_conv":
            s *= 2
        elif layer.op == "crop_and_concat" and (skips[layer.level] - s) % 2:
            return None                                         # (never, for a valid h)
        steps.append((layer, s_in, s))
    return steps


def output_size(h, depth=4):
    """Output size of a U-Net of `depth` for input size h, or None if h does not fit.

    Every 3x3 valid conv loses 2 px; every pool needs an even size; every up-conv doubles.
    For depth 4 the valid sizes are h = 16k + 124 (k >= 4), with output 16k - 60.
    """
    steps = walk(h, depth)
    return None if steps is None else steps[-1][2]


def valid_input_sizes(depth=4, max_size=1024, min_size=1):
    """All tile sizes in [min_size, max_size] that a U-Net of `depth` accepts."""
    return [h for h in range(min_size, max_size + 1) if output_size(h, depth) is not None]


def next_valid_size(h, depth=4):
    """The smallest valid size >= h (valid sizes come every 2^depth px above the smallest)."""
    s = max(1, h)
    while output_size(s, depth) is None:
        s += 1
    return s


def nearest_valid_sizes(h, depth=4):
    """(largest valid size < h or None, smallest valid size > h)."""
    below = next((s for s in range(h - 1, 0, -1) if output_size(s, depth) is not None), None)
    return below, next_valid_size(h + 1, depth)


def check_input_size(h, depth=4, what="input size"):
    """Raise a ValueError naming the nearest valid sizes if h does not fit the U-Net."""
    if output_size(h, depth) is None:
        below, above = nearest_valid_sizes(h, depth)
        near = f"{below} or {above}" if below else f"{above}"
        raise ValueError(f"{what} {h} does not fit a depth-{depth} U-Net with valid "
                         f"convolutions: the nearest valid sizes are {near} "
                         f"(see tinyunet.valid_input_sizes(depth={depth}))")


def crop_margins(depth=4):
    """Px the centre crop takes from each side of the skip map at each level i (0 at the top):
    the same for every valid input size (88, 40, 16, 4 for depth 4, top level first)."""
    steps = walk(next_valid_size(1, depth), depth)
    skips = {layer.level: out for layer, _, out in steps if is_skip(layer.name)}
    crops = [0] * depth
    for layer, size, _ in steps:
        if layer.op == "crop_and_concat":
            crops[layer.level] = (skips[layer.level] - size) // 2
    return crops


def margin(tile, depth=4):
    """Pixels a tile of `tile` px loses on each side to the valid convolutions: (T - O) / 2
    (92 for the paper's 572 -> 388). The output pixel (i, j) sees the input window centred on
    input pixel (i + margin, j + margin)."""
    check_input_size(tile, depth, "tile size")
    return (tile - output_size(tile, depth)) // 2


class UNet:
    """The paper's U-Net. `forward` -> logits, `backward` -> parameter gradients.

    x (N, in_channels, H, W) -> logits (N, n_classes, H', W'), H' = output_size(H, depth).

    The 3x3 convs (with their ReLU), the max pools, the up-convolutions and the crop-and-concats
    run on the model's engine (engine.choose_engine): on the CPU the Numba kernels of the
    kernels/ folder (imported as tinyunet.kernels), which compute what the readable ops compute,
    faster, on every core, with the same numbers whatever the number of threads; on the GPU, or
    with engine="readable" (or TINYUNET_KERNELS=0 in the environment), the readable ops of
    tinyunet/ops. Tests check that both give the same numbers (to rounding: they sum in
    different orders).

    What forward keeps for backward is the tape (each layer's cache, by layer name); the
    scratch memory its layers share, kept across steps, is the workspace (backend.Workspace).
    """

    def __init__(self, in_channels=1, n_classes=2, base_channels=64, depth=4, dropout=0.0,
                 dtype="float32", seed=0, device=None, engine=None):
        if depth < 1 or base_channels < 1 or in_channels < 1 or n_classes < 1:
            raise ValueError("in_channels, n_classes, base_channels and depth must be >= 1")
        self.config = dict(in_channels=in_channels, n_classes=n_classes,
                           base_channels=base_channels, depth=depth, dropout=dropout,
                           dtype=str(np.dtype(dtype)), seed=seed)
        self.depth, self.p_drop, self.dtype = depth, dropout, np.dtype(dtype)
        self.device = "cpu"
        self.params = OrderedDict()
        rng = np.random.default_rng(seed)
        # paper sec. 3: Gaussian with std sqrt(2 / N), N = the inputs of one neuron: kernel
        # area x input channels (an up-conv output pixel sees one input pixel per channel)
        shapes = {"conv3x3": lambda l: ((l.c_out, l.c_in, 3, 3), 9 * l.c_in, l.c_out),
                  "up_conv": lambda l: ((l.c_in, l.c_out, 2, 2), l.c_in, l.c_out),
                  "conv1x1": lambda l: ((l.c_out, l.c_in, 1, 1), l.c_in, l.c_out)}
        for layer in layers(in_channels, n_classes, base_channels, depth):
            if layer.op in shapes:
                shape, fan_in, n_bias = shapes[layer.op](layer)
                w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
                self.params[layer.name + ".weight"] = w.astype(self.dtype)
                self.params[layer.name + ".bias"] = np.zeros(n_bias, self.dtype)
        self._grads = OrderedDict((k, np.zeros_like(v)) for k, v in self.params.items())
        self.rng = backend.CounterRNG(seed + 1)                # dropout masks, on any device
        self.tape = {}                                         # layer name -> its cache
        self.workspace = backend.Workspace("cpu")
        self._engine_name = engine
        self.engine = choose_engine("cpu", engine)
        self.to(device)

    # ---- sizes and parameters -------------------------------------------------------------
    def output_size(self, h):
        """Output size for input size h; a ValueError naming the nearest valid sizes if invalid."""
        check_input_size(h, self.depth)
        return output_size(h, self.depth)

    def valid_input_sizes(self, max_size=1024):
        return valid_input_sizes(self.depth, max_size)

    def num_parameters(self):
        return int(sum(v.size for v in self.params.values()))

    def num_convolutions(self):
        """3x3 convs + up-convs + the 1x1 conv (the paper counts 23)."""
        return sum(1 for k in self.params if k.endswith(".weight"))

    def state_dict(self):
        """Ordered name -> array (the live arrays, in forward order, PyTorch layouts)."""
        return OrderedDict(self.params)

    def grads(self):
        """Ordered name -> gradient array, same keys as state_dict(), filled by backward()."""
        return OrderedDict(self._grads)

    def load_state_dict(self, state):
        """Copy arrays from `state` (NumPy or CuPy) into the model; names and shapes must match."""
        missing = [k for k in self.params if k not in state]
        unexpected = [k for k in state if k not in self.params]
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing[:5]}, unexpected keys "
                             f"{unexpected[:5]} (expected {len(self.params)} keys like "
                             f"'{next(iter(self.params))}')")
        for k, v in self.params.items():
            if tuple(state[k].shape) != v.shape:
                raise ValueError(f"load_state_dict: '{k}' has shape {tuple(state[k].shape)}, "
                                 f"the model expects {v.shape}")
        for k in self.params:
            src = backend.to_device(state[k], self.device).astype(self.dtype, copy=False)
            self.params[k][...] = src

    def to(self, device):
        """Move parameters and gradients to "cpu" or "gpu" (None: $TINYUNET_DEVICE, else the
        CPU), in place; returns self. The engine follows the device (engine.choose_engine).
        An optimizer made before moves its buffers at its next step."""
        device = backend.resolve_device(device)
        if device != self.device:
            for d in (self.params, self._grads):
                for k in d:
                    d[k] = backend.to_device(d[k], device)
            self.device = device
            self.tape, self.workspace = {}, backend.Workspace(device)
            self.engine = choose_engine(device, self._engine_name)
        return self

    def __getstate__(self):
        """What a pickle keeps (dask ships a model to its workers): parameters, gradients,
        configuration and the dropout generator; not the tape, the workspace or the engine,
        which the copy makes afresh."""
        state = dict(self.__dict__)
        state.update(tape={}, workspace=None, engine=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.workspace = backend.Workspace(self.device)
        self.engine = choose_engine(self.device, self._engine_name)

    # ---- forward and backward -------------------------------------------------------------
    def _check_input(self, x):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"UNet.forward: expected x of shape (N, C, H, W), got "
                             f"{getattr(x, 'shape', type(x))}")
        if x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"UNet.forward: x has {x.shape[1]} channels, the model expects "
                             f"{self.config['in_channels']}")
        if backend.device_of(x) != self.device:
            raise ValueError(f"UNet.forward: x is on the {backend.device_of(x)}, the model on "
                             f"the {self.device}; move one with backend.to_device / model.to")
        check_input_size(x.shape[2], self.depth, "input height")
        check_input_size(x.shape[3], self.depth, "input width")
        return x.astype(self.dtype, copy=False)

    def forward(self, x, train=False, keep=True):
        """x (N, C, H, W) -> logits (N, K, H', W'). train=True enables dropout.

        keep=True keeps on the tape what backward() needs (each layer's cache: the convs'
        inputs and outputs, the pools' argmax, the dropout mask); keep=False keeps nothing, for
        inference (see predict_proba).
        """
        x = self._check_input(x)
        self.tape = {}
        self._keep = keep
        with self.engine.scope():
            return self._forward(x, train)

    def _forward(self, x, train):
        """Fig. 1, left to right."""
        skips = []
        h = x
        for i in range(self.depth):                       # contracting path
            h = self._conv(f"down{i}.conv1", h)
            h = self._conv(f"down{i}.conv2", h)
            skips.append(h)
            h = self._record(f"down{i}.pool", *self.engine.max_pool2x2.forward(h))
        h = self._conv("bottom.conv1", h)
        h = self._conv("bottom.conv2", h)
        # paper sec. 3.1: "drop-out layers at the end of the contracting path"
        h = self._record("bottom.dropout", *dropout.forward(h, self.p_drop, self.rng, train))
        for i in reversed(range(self.depth)):             # expanding path
            h = self._record(f"up{i}.upconv",
                             *self.engine.up_conv2x2.forward(h, *self._wb(f"up{i}.upconv")))
            h = self._record(f"up{i}.concat", *self.engine.crop_and_concat.forward(skips[i], h))
            skips[i] = None                               # inference: free it once cropped
            h = self._conv(f"up{i}.conv1", h)
            h = self._conv(f"up{i}.conv2", h)
        return self._record("out", *conv1x1.forward(h, *self._wb("out")))

    def _wb(self, name):
        return self.params[name + ".weight"], self.params[name + ".bias"]

    def _conv(self, name, h):
        """3x3 conv + bias + ReLU on the engine (its cache keeps the layer's input and output)."""
        return self._record(name, *self.engine.conv3x3_relu.forward(
            h, *self._wb(name), self.workspace, keep=self._keep))

    def _record(self, name, y, cache):
        """An op's output; its cache goes on the tape when the forward keeps one."""
        if self._keep:
            self.tape[name] = cache
        return y

    def backward(self, dlogits, input_grad=True):
        """dlogits (N, K, H', W') -> dx (N, C, H, W); fills grads(). Call after forward().

        input_grad=False skips the gradient of the input image (training does not need it) and
        returns None.
        """
        if "out" not in self.tape:
            raise RuntimeError("UNet.backward: call forward() first (each backward consumes "
                               "the activations of one forward made with keep=True)")
        with self.engine.scope():
            return self._backward(dlogits, input_grad)

    def _backward(self, dlogits, input_grad):
        """Fig. 1, right to left: each op's backward, its parameter gradients into grads()."""
        dh = self._grad("out", *conv1x1.backward(dlogits, self.tape.pop("out")))
        dskips = {}
        for i in range(self.depth):                       # expanding path, in reverse
            dh = self._conv_backward(f"up{i}.conv2", dh)
            dh = self._conv_backward(f"up{i}.conv1", dh)
            concat = self.engine.crop_and_concat
            dskips[i], dh = concat.backward(dh, self.tape.pop(f"up{i}.concat"))
            name = f"up{i}.upconv"
            dh = self._grad(name, *self.engine.up_conv2x2.backward(dh, self.tape.pop(name)))
        dh = dropout.backward(dh, self.tape.pop("bottom.dropout"))
        dh = self._conv_backward("bottom.conv2", dh)
        dh = self._conv_backward("bottom.conv1", dh)
        for i in reversed(range(self.depth)):             # contracting path, in reverse
            dh = self.engine.max_pool2x2.backward(dh, self.tape.pop(f"down{i}.pool"))
            dh += dskips.pop(i)                           # the skip connection's gradient
            dh = self._conv_backward(f"down{i}.conv2", dh)
            dh = self._conv_backward(f"down{i}.conv1", dh, input_grad or i > 0)
        return dh

    def _conv_backward(self, name, dy, input_grad=True):
        return self._grad(name, *self.engine.conv3x3_relu.backward(
            dy, self.tape.pop(name), self.workspace, input_grad=input_grad))

    def _grad(self, name, dx, dw, db):
        """dx; dw and db into the layer's gradients."""
        self._grads[name + ".weight"][...] = dw
        self._grads[name + ".bias"][...] = db
        return dx

    def predict_proba(self, x):
        """Class probabilities (N, K, H', W') in evaluation mode (nothing kept for a backward)."""
        return softmax(self.forward(x, train=False, keep=False))
