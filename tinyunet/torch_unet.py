"""The same U-Net in PyTorch (optional: pip install 'tinyunet[torch]'), with tinyunet's
parameter names and layouts, so that `load_state_dict(tinyunet_model.state_dict())` works
unchanged (conv (out, in, kh, kw), up-conv (in, out, 2, 2)). The benchmarks time tinyunet against
it, and export.py writes TorchScript from it.

The centre crops are constant slices: in a U-Net with valid convolutions, the skip map of a level
is larger than the upsampled map by the same number of pixels whatever the (valid) input size
(8, 32, 80 and 176 for the paper's network, from the lowest level up), so the crop needs no
sizes at run time, and a traced model (TorchScript) serves every valid input size.
"""
import torch
from torch import nn
from torch.nn import functional as F

from .model import crop_margins


class TorchUNet(nn.Module):
    def __init__(self, in_channels=1, n_classes=2, base_channels=64, depth=4, softmax=False):
        super().__init__()
        self.depth, self.softmax = depth, softmax
        self.crops = crop_margins(depth)              # per level i: px cropped on each side
        ch = [base_channels * 2 ** i for i in range(depth + 1)]
        conv = lambda i, o: nn.Conv2d(i, o, 3)        # noqa: E731
        c = in_channels
        for i in range(depth):
            self.add_module(f"down{i}", nn.ModuleDict(dict(conv1=conv(c, ch[i]),
                                                           conv2=conv(ch[i], ch[i]))))
            c = ch[i]
        self.bottom = nn.ModuleDict(dict(conv1=conv(ch[depth - 1], ch[depth]),
                                         conv2=conv(ch[depth], ch[depth])))
        for i in reversed(range(depth)):
            self.add_module(f"up{i}", nn.ModuleDict(dict(
                upconv=nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2),
                conv1=conv(2 * ch[i], ch[i]), conv2=conv(ch[i], ch[i]))))
        self.out = nn.Conv2d(ch[0], n_classes, 1)

    def forward(self, x):
        skips = []
        for i in range(self.depth):
            m = getattr(self, f"down{i}")
            x = F.relu(m["conv2"](F.relu(m["conv1"](x))))
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = F.relu(self.bottom["conv2"](F.relu(self.bottom["conv1"](x))))
        for i in reversed(range(self.depth)):
            m = getattr(self, f"up{i}")
            x = m["upconv"](x)
            c = self.crops[i]
            x = torch.cat([skips[i][:, :, c:-c, c:-c], x], dim=1)
            x = F.relu(m["conv2"](F.relu(m["conv1"](x))))
        x = self.out(x)
        return F.softmax(x, dim=1) if self.softmax else x


def weighted_loss(logits, labels, weights):
    """Same loss as tinyunet.softmax_cross_entropy: mean over pixels of w * -log p_label."""
    nll = F.cross_entropy(logits, labels, reduction="none")
    return (weights * nll).mean()
