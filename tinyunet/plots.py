"""The figures tinyunet draws: the network (the paper's fig. 1), training curves, predictions.

    feature_maps(model, 572)   every feature map's channels and size, from the model's parameters
    draw_unet(model, 572)      the U of fig. 1 drawn from those maps
    plot_curves(log, path)     training loss and validation errors of a run's log.jsonl records
                               (e.g. plot_curves(log, "curves.png", best_step(log)))
    plot_predictions(...)      image, ground truth, P(cell) and weight map, with colour bars
    plot_overlay(image, prob)  the image with the predicted membranes (P(cell) < 0.5) in red

Figures are built with matplotlib's object API (no pyplot), so drawing one changes no global
state and needs no display.
"""
import re
from collections import namedtuple

import numpy as np

from .model import check_input_size, output_size

# name: the layer (or "input"); op: what made the map from the previous one; level: 0 at the top
# of the U, depth at the bottom; channels, size: the map is (channels, size, size)
FeatureMap = namedtuple("FeatureMap", "name op level channels size")


def feature_maps(model, size=572):
    """[FeatureMap] of `model` for a size x size input, in forward order.

    Walks the model's parameters (forward order, PyTorch layouts, see tinyunet.model): a 3x3 conv
    weight (F, C, 3, 3) makes F channels and loses 2 px; down{i}.conv2's map is level i's skip
    connection and is pooled (half the size) before the next level; an up-conv weight (C, C/2, 2, 2)
    makes C/2 channels at twice the size, and the cropped skip map is put in front of them.
    """
    check_input_size(size, model.depth)
    maps = [FeatureMap("input", "input", 0, model.config["in_channels"], size)]
    skips = {}
    for name, w in model.params.items():
        if not name.endswith(".weight"):
            continue
        layer = name[:-len(".weight")]
        block, _, op = layer.partition(".")              # "down0", "conv1"; "out", ""
        level = model.depth if block == "bottom" else int(re.sub(r"\D", "", block) or 0)
        last = maps[-1]
        if op == "upconv":
            up = FeatureMap(layer, "up_conv", level, w.shape[1], 2 * last.size)
            skip = skips[level]
            maps += [up, FeatureMap(f"{block}.concat", "crop_and_concat", level,
                                    skip.channels + up.channels, up.size)]
        elif op.startswith("conv"):
            if level > last.level:                        # the pool between two levels
                last = FeatureMap(f"down{level - 1}.pool", "max_pool", level, last.channels,
                                  last.size // 2)
                maps.append(last)
            maps.append(FeatureMap(layer, "conv3x3", level, w.shape[0], last.size - 2))
            if block.startswith("down") and op == "conv2":
                skips[level] = maps[-1]
        else:                                             # "out": the 1x1 conv
            maps.append(FeatureMap(layer, "conv1x1", 0, w.shape[0], last.size))
    assert maps[-1].size == output_size(size, model.depth), "feature_maps disagrees with the model"
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
        if m.name.startswith("down") and m.name.endswith("conv2"):
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


def best_step(log):
    """The step of a run's best.npz from its log.jsonl records: the first best validation after
    a training step, by config.BEST (the lowest Rand error; the highest SEG for a run on
    instance labels); a run also logs a validation at step 0."""
    from .config import BEST
    va = [r for r in log if "val" in r and r["step"] > 0]
    if not va:
        return None
    key, sign = BEST["instances" if "seg" in va[0]["val"] else "membranes"]
    return min(va, key=lambda r: sign * r["val"][key])["step"]


def plot_curves(log, path, best_step=None):
    """Training loss and validation errors from log.jsonl records; `best_step` is marked; `path`
    a file name or an open binary file (PNG). A
    run with a moving average of its parameters validates the average ("val", solid) and may
    log the raw parameters too ("val_plain", dashed)."""
    from matplotlib.figure import Figure
    tr = [r for r in log if "loss" in r]
    va = [r for r in log if "val" in r]
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots(1, 2)
    ax[0].plot([r["step"] for r in tr], [r["loss"] for r in tr])
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    cells = bool(va) and "seg" in va[0]["val"]
    for key, colour in ((("seg", "C0"), ("f1", "C1")) if cells else
                        (("pixel_error", "C0"), ("rand_error", "C1"))):
        ax[1].plot([r["step"] for r in va], [r["val"][key] for r in va], "o-", color=colour,
                   label=key)
        plain = [r for r in va if "val_plain" in r]     # a run with a moving average
        if plain:
            ax[1].plot([r["step"] for r in plain], [r["val_plain"][key] for r in plain], ".--",
                       color=colour, alpha=0.6, label=f"{key}, raw parameters")
    if best_step is not None:
        for a in ax:
            a.axvline(best_step, color="0.4", ls="--", lw=1)
        best = next((r["val"] for r in va if r["step"] == best_step), None)
        if best is not None:
            ax[1].plot([best_step], [best["seg" if cells else "rand_error"]], "*",
                       color="black", ms=12, label=f"best (step {best_step})")
    ax[1].set(xlabel="step", ylabel="score" if cells else "error", title="validation",
              yscale="linear" if cells else "log")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")


def instance_colours(labels, seed=0):
    """RGB (H, W, 3) of instance labels: a colour per cell (neighbouring ids far apart in hue),
    black background, grey for unannotated cells (-1)."""
    import matplotlib
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    palette = matplotlib.colormaps["hsv"](np.random.default_rng(seed).permutation(max(n, 1)) /
                                          max(n, 1))[:, :3] * 0.85 + 0.15
    rgb = np.zeros(labels.shape + (3,))
    cells = labels > 0
    rgb[cells] = palette[(labels[cells] - 1) % len(palette)]
    rgb[labels < 0] = 0.45
    return rgb


def plot_predictions(image, label, prob, weights, path, title):
    """Image, ground truth, P(cell) and weight map of one slice side by side, with colour bars.
    Instance labels (signed integers) are shown a colour per cell."""
    from matplotlib.figure import Figure
    if np.asarray(label).dtype.kind == "i":
        label = instance_colours(label)
    panels = [(image, "image", "gray", None), (label, "ground truth", "gray", None),
              (prob, "P(cell)", "viridis", (0, 1)), (weights, "weight map", "magma", None)]
    fig = Figure(figsize=(17, 4.2))
    ax = fig.subplots(1, 4)
    for a, (img, name, cmap, lim) in zip(ax, panels):
        im = a.imshow(img, cmap=cmap, vmin=lim and lim[0], vmax=lim and lim[1])
        fig.colorbar(im, ax=a, fraction=0.046, pad=0.03)
        a.set_title(name)
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")


def plot_overlay(image, prob, path):
    """The grey image with the pixels predicted as membrane (P(cell) < 0.5) tinted red, saved
    as an RGB PNG at the image's own size (predict.py's <name>_overlay.png); `path` a file name
    or an open binary file."""
    import matplotlib.image as mpimg
    grey = np.asarray(image, np.float32) / max(float(np.max(image)), 1.0)
    rgb = np.stack([grey] * 3, axis=-1)
    membrane = np.asarray(prob) < 0.5
    rgb[membrane] = 0.6 * rgb[membrane] + 0.4 * np.array([1.0, 0.0, 0.0])
    mpimg.imsave(path, np.clip(rgb, 0, 1), format="png")


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


def plot_merges_splits(image, truth, prob, threshold, path=None, title=""):
    """matplotlib Figure: the image, and the prediction prob > threshold over the ground truth,
    with the true cells that the prediction merges (red) or splits (blue) filled in
    (metrics.merges_and_splits); membranes the prediction misses and adds are drawn in
    yellow and cyan. Saved to `path` if given."""
    from matplotlib.figure import Figure

    from .metrics import merges_and_splits
    truth = np.asarray(truth, bool)
    pred = np.asarray(prob) > threshold
    ms = merges_and_splits(pred, truth)
    rgb = np.stack([truth * 0.55] * 3, axis=-1)                   # true cells grey
    rgb[ms["merged"]] = (0.85, 0.2, 0.2)
    rgb[ms["split"] & ~ms["merged"]] = (0.2, 0.4, 0.9)
    rgb[ms["split"] & ms["merged"]] = (0.7, 0.2, 0.8)
    rgb[~truth & pred] = (1.0, 0.85, 0.0)                         # missed membrane: a gap
    rgb[truth & ~pred] = (0.0, 0.8, 0.8)                          # extra membrane
    fig = Figure(figsize=(10, 5.2))
    ax = fig.subplots(1, 2)
    ax[0].imshow(image, cmap="gray")
    ax[0].set_title("image")
    ax[1].imshow(rgb)
    ax[1].set_title(f"{ms['merges']} merges (red), {ms['splits']} splits (blue) at p > "
                    f"{threshold:.2f}", fontsize=10)
    for a in ax:
        a.axis("off")
    fig.text(0.5, 0.02, "grey: true cells; yellow: membrane predicted as cell (gaps that "
             "merge cells); cyan: cell predicted as membrane", ha="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    if path is not None:
        fig.savefig(path, dpi=130)
    return fig
