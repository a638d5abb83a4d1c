"""The tutorials' diagrams, drawn from the library's own objects: the network of fig. 1 from its
layers, the memory each layer could keep, the training targets of touching cells.

    feature_maps(model, 572)   every feature map's channels and size (model.layers, model.walk)
    draw_unet(model, 572)      the U of fig. 1 drawn from those maps (docs/05-network.md)
    layer_memory(model, 572)   each 3x3 conv's input, im2col columns and output in MiB, and
    plot_layer_memory(...)     its bars (docs/01-convolution.md)
    plot_cell_targets(...)     a frame's cells, classes with separation borders and weight map
                               (docs/15-cells.md)

Built with matplotlib's object API (no pyplot), as plots.py's figures.
"""
from collections import namedtuple

import numpy as np

from .model import check_input_size, is_skip, layers, walk
from .plots import instance_colours

# name: the layer (or "input"); op: what made the map from the previous one; level: 0 at the top
# of the U, depth at the bottom; channels, size: the map is (channels, size, size)
FeatureMap = namedtuple("FeatureMap", "name op level channels size")


def feature_maps(model, size=572):
    """[FeatureMap] of `model` for a size x size input, in forward order: the network's layers
    (model.layers) and their sizes (model.walk), the input first."""
    check_input_size(size, model.depth)
    cfg = model.config
    net = layers(cfg["in_channels"], cfg["n_classes"], cfg["base_channels"], cfg["depth"])
    maps = [FeatureMap("input", "input", 0, cfg["in_channels"], size)]
    for layer, (_, _, out) in zip(net, walk(size, model.depth)):
        if layer.op != "dropout":                        # it changes no map's shape
            maps.append(FeatureMap(layer.name, layer.op, layer.level, layer.c_out, out))
    return maps


# the paper's fig. 1 colours
ARROWS = {"conv3x3": ("conv 3x3, ReLU", "#1f4e9c"), "crop_and_concat": ("copy and crop", "0.55"),
          "max_pool": ("max pool 2x2", "#c0262d"), "up_conv": ("up-conv 2x2", "#2e9e44"),
          "conv1x1": ("conv 1x1", "#13a3a3")}


def draw_unet(model, size=572, figsize=(15, 7.5)):
    """matplotlib Figure of the U in the style of the paper's fig. 1: one box per feature map
    (channels above, size below; width grows with log2 of the channels, height with the size),
    levels going down on the contracting path and up on the expanding one."""
    import math

    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, Rectangle

    maps = feature_maps(model, size)
    width = lambda c: 0.14 + 0.085 * math.log2(c + 1)                 # noqa: E731
    height = lambda s: 3.0 * math.sqrt(s / size)                        # noqa: E731
    gap, vgap = 0.55, 1.0
    # level centre lines: each level sits below the previous one with room for the pool arrow
    level_h = {}
    for m in maps:
        level_h[m.level] = max(level_h.get(m.level, 0), height(m.size))
    y, ys = 0.0, {}
    for lv in range(model.depth + 1):
        if lv:
            y -= level_h[lv - 1] / 2 + vgap + level_h[lv] / 2
        ys[lv] = y

    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()

    def arrow(p, q, op):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=11, lw=1.6,
                                     color=ARROWS[op][1], shrinkA=1, shrinkB=1))

    def box(x, m, w, fc, channels, aside=False):
        """A map's box and its channel count: above it, or beside a vertical arrow (aside)."""
        h, yc = height(m.size), ys[m.level]
        ax.add_patch(Rectangle((x, yc - h / 2), w, h, fc=fc, ec="black", lw=0.8))
        ax.text(x + w / 2 + (0.08 if aside else 0), yc + h / 2 + 0.08, channels,
                ha="left" if aside else "center", va="bottom", fontsize=7)

    boxes = []                            # (map, x left, width) in forward order
    skip_box = {}
    x = 0.0
    for i, m in enumerate(maps):
        w, h, yc = width(m.channels), height(m.size), ys[m.level]
        # a box that an up-conv arrow leaves from its top has its count beside the arrow
        aside = i + 1 < len(maps) and maps[i + 1].op == "up_conv"
        if m.op in ("max_pool", "up_conv"):
            # straight down (pool) or up (up-conv) from the previous box's centre
            prev, px, pw = boxes[-1]
            down = m.op == "max_pool"
            xc = px + pw / 2
            x = xc - w / 2
            arrow((xc, ys[prev.level] + (-1 if down else 1) * height(prev.size) / 2),
                  (xc, yc + (1 if down else -1) * h / 2), m.op)
            if m.op == "up_conv":          # drawn with the concatenation that follows
                boxes.append((m, x, w))
                continue
            box(x, m, w, "#5b8fd1", str(m.channels), aside=True)
        elif m.op == "crop_and_concat":
            # the cropped skip map (white) in front of the upsampled map (light blue)
            up, up_x, up_w = boxes.pop()
            skip, skip_x, skip_w = skip_box[m.level]
            x = up_x - skip_w
            box(x, skip._replace(size=m.size, level=m.level), skip_w, "white", "")
            box(up_x, up, up_w, "#9ec3e6", "")
            ax.text(x + (skip_w + up_w) / 2, yc + h / 2 + 0.08,
                    f"{skip.channels}+{up.channels}", ha="center", va="bottom", fontsize=7)
            arrow((skip_x + skip_w, yc), (x, yc), m.op)
            w = skip_w + up_w
        else:
            if boxes:
                x += gap
                arrow((x - gap, yc), (x, yc), m.op)
            box(x, m, w, "white" if m.op == "input" else "#5b8fd1", str(m.channels), aside)
        ax.text(x - 0.03, yc - h / 2, f"{m.size}²", ha="right", va="bottom", fontsize=6.5,
                rotation=90)
        boxes.append((m, x, w))
        if is_skip(m.name):
            skip_box[m.level] = boxes[-1]
        x += w

    right = max(bx + bw for _, bx, bw in boxes)
    bottom = ys[model.depth] - level_h[model.depth] / 2
    ax.set_xlim(-0.6, right + 0.3)
    ax.set_ylim(bottom - 0.5, level_h[0] / 2 + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    handles = [Line2D([], [], color=c, lw=2, marker=">", markevery=[-1], label=label)
               for label, c in ARROWS.values()]
    ax.legend(handles=handles, loc="lower right", frameon=False, fontsize=9)
    c = model.config
    ax.set_title(f"U-Net, depth {c['depth']}, base {c['base_channels']} channels: "
                 f"{size}² input → {maps[-1].size}² output, {model.num_parameters():,} parameters",
                 fontsize=11)
    fig.tight_layout()
    return fig


def plot_cell_targets(image, instances, classes, weights, figsize=(17, 4.6)):
    """The paper's fig. 3 for instance labels: the image, the reference cells (a colour each),
    the training target (cells white, separation borders red, unannotated cells grey) and the
    weight map. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure
    instances = np.asarray(instances)
    target = np.stack([np.asarray(classes, float)] * 3, axis=-1)
    border = (instances > 0) & (np.asarray(classes) == 0)
    target[border] = (0.9, 0.1, 0.1)
    target[instances < 0] = 0.45
    fig = Figure(figsize=figsize)
    ax = fig.subplots(1, 4)
    ax[0].imshow(image, cmap="gray")
    ax[1].imshow(instance_colours(instances))
    ax[2].imshow(target)
    im = ax[3].imshow(weights, cmap="magma")
    fig.colorbar(im, ax=ax[3], fraction=0.046, pad=0.03)
    for a, title in zip(ax, ("image", "reference cells (instances)",
                             "target: cells, separation borders (red)", "weight map (eq. 2)")):
        a.set_title(title)
        a.axis("off")
    fig.tight_layout()
    return fig


def layer_memory(model, size=572, itemsize=4):
    """[(layer, input MiB, im2col columns MiB, output MiB)] for every 3x3 conv of `model` at a
    size x size input (batch 1): what a layer could keep for its backward pass."""
    maps = feature_maps(model, size)
    mib = lambda n: n * itemsize / 2 ** 20                                # noqa: E731
    rows = []
    for prev, m in zip(maps, maps[1:]):
        if m.op == "conv3x3":
            rows.append((m.name, mib(prev.channels * prev.size ** 2),
                         mib(9 * prev.channels * m.size ** 2), mib(m.channels * m.size ** 2)))
    return rows


def plot_layer_memory(model, size=572, figsize=(12, 4)):
    """matplotlib Figure: bars of each 3x3 conv's input, im2col columns and output (layer_memory)."""
    from matplotlib.figure import Figure
    rows = layer_memory(model, size)
    fig = Figure(figsize=figsize)
    ax = fig.subplots()
    pos = np.arange(len(rows))
    for k, (label, colour) in enumerate([("input x", "#1f4e9c"), ("im2col columns", "#c0262d"),
                                         ("output y", "#2e9e44")]):
        ax.bar(pos + (k - 1) * 0.27, [r[k + 1] for r in rows], 0.27, label=label, color=colour)
    ax.set_xticks(pos, [r[0] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="MiB (float32)", title=f"what each 3x3 conv could keep for its backward pass, "
                                          f"{size}x{size} tile")
    ax.legend()
    fig.tight_layout()
    return fig
