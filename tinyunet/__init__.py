"""tinyunet: the U-Net of Ronneberger et al. (2015), every layer written by hand on NumPy/CuPy."""
from . import backend, gradcheck, optim
from .backend import gpu_available, to_device, to_numpy
from .model import UNet, check_input_size, output_size, valid_input_sizes
from .optim import SGD, Adam
from .softmax_cross_entropy import softmax, softmax_cross_entropy

__version__ = "0.1.0"
