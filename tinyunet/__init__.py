"""tinyunet: the U-Net of Ronneberger et al. (2015), every layer written by hand on NumPy/CuPy.

    tinyunet.ops        the hand-written ops, forward and backward (re-exported here)
    tinyunet.kernels    their Numba twins and the other CPU kernels (the folder kernels/)
    tinyunet.engine     the one place that chooses between the two
    tinyunet.model      UNet, the network of fig. 1, and its valid sizes
    the pipeline        optim, data, config, checkpoint, train, infer, volume, metrics, plots
    tinyunet.commands   the command-line programs that examples/ runs
"""
from . import backend, gradcheck, optim
from .backend import gpu_available, to_device, to_numpy
from .model import UNet, check_input_size, output_size, valid_input_sizes
from .ops import (conv1x1, conv3x3, conv3x3_relu, crop_and_concat, dropout, max_pool2x2, relu,
                  up_conv2x2)
from .ops.softmax_cross_entropy import softmax, softmax_cross_entropy
from .optim import SGD, Adam

__version__ = "0.1.0"
__all__ = ["backend", "gradcheck", "optim", "gpu_available", "to_device", "to_numpy", "UNet",
           "check_input_size", "output_size", "valid_input_sizes", "conv1x1", "conv3x3",
           "conv3x3_relu", "crop_and_concat", "dropout", "max_pool2x2", "relu", "up_conv2x2",
           "softmax", "softmax_cross_entropy", "SGD", "Adam"]
