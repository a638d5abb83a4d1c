"""Training samples as in the paper (sec. 3, 3.1): one large tile per step, augmented.

A sample is an input tile T x T cut from the image mirrored at its borders, and the label and
weight-map tiles of the output size O x O, aligned with the valid-padding output (the output
tile is the input tile's centre). One elastic deformation (kernels/elastic.py: 3x3 grid, 10 px)
moves image, labels and weights together; then a random flip / 90-degree rotation and a random
grey-value change of the image, as the recipe `augment` says (labels and weights never change):
    paper   gain exp(z1) and offset z2, z1, z2 ~ N(0, 0.1): x * exp(z1) + z2
    wide    for another sequence's brightness, contrast and focus: the gain and offset with three
            times the spread (z1, z2 ~ N(0, 0.3)); then with probability 1/2 a Gaussian blur,
            sigma ~ U(0.5, 2) px (out of focus); then with probability 1/2 additive Gaussian
            noise of std ~ U(0, 0.1) (the images are normalised: std 1)
"wide" draws its coins, its parameters and the noise every step, whichever branches are taken,
so that each step uses the same stretch of the random stream.
"""
import numpy as np
from scipy import ndimage as ndi

from ..kernels.elastic import deform_grid, random_displacement

AUGMENTS = ("paper", "wide")         # the grey-value change: the paper's, or wider (above)


class TileSampler:
    """Draws (x, classes, weights) training samples from normalised images.

    images: float32 (N, H, W), normalised; classes: uint8 (N, H, W), 0 or 1; weights: float32
    (N, H, W) (data.targets.targets makes both from label images). tile: input tile size T;
    out: its output size O. grey: the grey-value change, of the kind `augment` names (one of
    AUGMENTS); grey=False: none.
    """

    def __init__(self, images, classes, weights, tile, out, elastic=True, sigma=10.0, grid=3,
                 flips=True, grey=True, augment="paper"):
        if (tile - out) % 2:
            raise ValueError(f"tile {tile} and output {out} must differ by an even number")
        if augment not in AUGMENTS:
            valid = " or ".join(map(repr, AUGMENTS))
            raise ValueError(f"augment must be {valid}, got {augment!r}")
        self.images = np.asarray(images, np.float32)
        self.classes = np.asarray(classes, np.uint8)
        self.weights = np.asarray(weights, np.float32)
        self.tile, self.out, self.margin = tile, out, (tile - out) // 2
        self.elastic, self.sigma, self.grid = elastic, sigma, grid
        self.flips, self.grey, self.augment = flips, grey, augment

    def sample(self, rng):
        """One sample: x (1, 1, T, T) float32, labels (1, O, O) uint8 (the classes, checked:
        0 or 1), weights (1, O, O) float32."""
        k = int(rng.integers(len(self.images)))
        h, w = self.images.shape[1:]
        # output-tile origin: anywhere the output tile fits (mirrored context beyond the image)
        oy = int(rng.integers(min(0, h - self.out), max(0, h - self.out) + 1))
        ox = int(rng.integers(min(0, w - self.out), max(0, w - self.out) + 1))
        disp = (random_displacement(self.grid, self.sigma, rng) if self.elastic
                else np.zeros((2, self.grid, self.grid)))
        # one field for all three: cubic image, nearest labels, linear weights (paper sec. 3.1)
        img, lab, wts = deform_grid([self.images[k], self.classes[k], self.weights[k]], disp,
                                    order=[3, 0, 1], out_shape=(self.tile, self.tile),
                                    offset=(oy - self.margin, ox - self.margin))
        c = slice(self.margin, self.margin + self.out)
        lab, wts = lab[c, c], wts[c, c]
        if self.flips:                                   # tiles are square: centres stay aligned
            r, flip = int(rng.integers(4)), bool(rng.integers(2))
            img, lab, wts = (np.rot90(a, r) for a in (img, lab, wts))
            if flip:
                img, lab, wts = img[:, ::-1], lab[:, ::-1], wts[:, ::-1]
        if self.grey and self.augment == "paper":        # grey-value change: gain and offset
            img = img * np.float32(np.exp(rng.normal(0.0, 0.1))) + np.float32(rng.normal(0.0, 0.1))
        elif self.grey:                                  # "wide": every number drawn, in order
            img = img * np.float32(np.exp(rng.normal(0.0, 0.3))) + np.float32(rng.normal(0.0, 0.3))
            blur, blur_sigma = rng.random() < 0.5, rng.uniform(0.5, 2.0)
            noisy, noise_std = rng.random() < 0.5, rng.uniform(0.0, 0.1)
            noise = rng.standard_normal(img.shape, dtype=np.float32)
            if blur:                                     # out of focus
                img = ndi.gaussian_filter(img, blur_sigma, mode="reflect")
            if noisy:
                img = img + np.float32(noise_std) * noise
        return (np.ascontiguousarray(img, np.float32)[None, None],
                np.ascontiguousarray(lab, np.uint8)[None],
                np.ascontiguousarray(wts, np.float32)[None])
