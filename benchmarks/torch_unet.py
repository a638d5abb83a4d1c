"""The same U-Net in PyTorch, with parameter names equal to tinyunet's, for benchmarks only.

Built so that `load_state_dict(tinyunet_model.state_dict())` works unchanged: the layouts are the
same (conv (out, in, kh, kw), up-conv (in, out, 2, 2)).
"""
import torch
from torch import nn
from torch.nn import functional as F


class TorchUNet(nn.Module):
    def __init__(self, in_channels=1, n_classes=2, base_channels=64, depth=4):
        super().__init__()
        self.depth = depth
        ch = [base_channels * 2 ** i for i in range(depth + 1)]
        conv = lambda i, o: nn.Conv2d(i, o, 3)
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
            s = skips[i]
            top, left = (s.shape[2] - x.shape[2]) // 2, (s.shape[3] - x.shape[3]) // 2
            x = torch.cat([s[:, :, top:top + x.shape[2], left:left + x.shape[3]], x], dim=1)
            x = F.relu(m["conv2"](F.relu(m["conv1"](x))))
        return self.out(x)


def weighted_loss(logits, labels, weights):
    """Same loss as tinyunet.softmax_cross_entropy: mean over pixels of w * -log p_label."""
    nll = F.cross_entropy(logits, labels, reduction="none")
    return (weights * nll).mean()
