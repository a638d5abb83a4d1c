"""The figures of a run and of its predictions (the tutorials' diagrams are diagrams.py).

    plot_curves(log, path)     training loss and validation errors of a run's log.jsonl records
                               (e.g. plot_curves(log, "curves.png", config.best_step(log, kind)))
    plot_predictions(...)      image, ground truth, P(cell) and weight map, with colour bars
    plot_overlay(image, prob)  the image with the predicted membranes (P(cell) < 0.5) in red
    plot_merges_splits(...)    a slice's merged and split cells outlined
    instance_colours(labels)   a colour per cell

Figures are built with matplotlib's object API (no pyplot), so drawing one changes no global
state and needs no display.
"""

import numpy as np


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
