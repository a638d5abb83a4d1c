import re

import numpy as np
import pytest

from tinyunet import UNet, backend, infer
from tinyunet.infer import (_bytes, choose_tile, covering_tile, forward_memory, mirror_pad,
                            predict_tiled, predict_whole, tile_grid)

from . import fake_cupy
from .conftest import small_model


def make_model(depth, base, dtype="float64"):
    """Non-trivial biases, so that the outputs vary across the image."""
    return small_model(depth, base, dtype=dtype, biases=True)


@pytest.fixture(scope="module")
def model():
    return make_model(depth=2, base=4)


def mirror_reference(image, top, bottom, left, right):
    """The paper's mirror (fig. 2) by index: position -k reads pixel k, position n-1+k reads
    pixel n-1-k (the edge pixel is not repeated); farther out it reflects again, period 2(n-1)."""
    def source(i, n):
        i %= 2 * (n - 1)
        return i if i < n else 2 * (n - 1) - i
    c, h, w = image.shape
    out = np.empty((c, h + top + bottom, w + left + right), image.dtype)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = image[:, source(i - top, h), source(j - left, w)]
    return out


def test_mirror_pad_mirrors_about_the_edge_pixels():
    image = np.arange(2 * 4 * 5, dtype=np.float64).reshape(2, 4, 5)
    padded = mirror_pad(image, 2, 1, 3, 0)
    assert padded.shape == (2, 7, 8)
    np.testing.assert_array_equal(padded[0, 2, :4], [3, 2, 1, 0])      # ... x2 x1 | x0 x1 ...
    np.testing.assert_array_equal(padded[0, :3, 3], [10, 5, 0])        # column 0, rows 2 1 0
    np.testing.assert_array_equal(padded, mirror_reference(image, 2, 1, 3, 0))
    # pads larger than the image reflect again (a 92 px tile margin around a small image)
    np.testing.assert_array_equal(mirror_pad(image, 9, 7, 6, 11),
                                  mirror_reference(image, 9, 7, 6, 11))


@pytest.mark.parametrize("tile", [44, 60, 92, 140])
def test_tiled_equals_whole_image_for_any_tile(model, tile):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((71, 53))
    whole = predict_whole(model, image)
    tiled = predict_tiled(model, image, tile=tile, batch=3)
    assert tiled.shape == (2, 71, 53)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("depth, tile", [(3, 100), (3, 116), (4, 204), (4, 220)])
def test_tiled_equals_whole_image_for_deeper_networks(depth, tile):
    """The tile step must be a multiple of 2^depth. Outputs are 4 px modulo 2^depth, so at depth
    3 a step aligned to 4 px only would shift the pooling grid; at depth 2 (and from 8 to 16 px
    at depth 4) the two alignments happen to give the same step, and the smaller tests pass."""
    model = make_model(depth, base=2)
    image = np.random.default_rng(depth).standard_normal((45, 37))
    whole = predict_whole(model, image)
    tiled = predict_tiled(model, image, tile=tile, batch=4)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)


def test_unaligned_tiles_would_leave_seams(model):
    """Why the step is a multiple of 2^depth: a tile shifted by 1 px sees the pooling grid
    shifted and gives different numbers where it overlaps its neighbour."""
    rng = np.random.default_rng(0)
    image = mirror_pad(rng.standard_normal((1, 40, 40)), 20, 20, 20, 20)
    a = model.predict_proba(image[None, :, 0:60, 0:60])[0]
    b = model.predict_proba(image[None, :, 1:61, 0:60])[0]
    assert np.abs(a[:, 1:] - b[:, :-1]).max() > 1e-3


def test_tta_of_a_symmetric_model_output_is_consistent(model):
    image = np.random.default_rng(3).standard_normal((50, 50))
    p = predict_tiled(model, image, tile=60, tta=True)
    assert p.shape == (2, 50, 50)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-6)
    # TTA of a rotated image is the rotated TTA result (the 8 transforms form a group)
    q = predict_tiled(model, np.rot90(image).copy(), tile=60, tta=True)
    np.testing.assert_allclose(np.rot90(p, axes=(1, 2)), q, atol=1e-6)


def test_tta_of_one_channel_is_that_channel_of_the_full_tta(model):
    image = np.random.default_rng(6).standard_normal((30, 26))
    full = predict_tiled(model, image, tile=60, tta=True)
    one = predict_tiled(model, image, tile=60, tta=True, channel=1)
    assert one.shape == (30, 26)
    np.testing.assert_allclose(one, full[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tta_gives_the_dtype_of_one_pass(dtype):
    """float32, or float64 for a float64 model, with or without tta (the average is not
    promoted to float64 for a float32 model)."""
    model = make_model(depth=2, base=2, dtype=dtype)
    image = np.random.default_rng(7).standard_normal((20, 20))
    for channel in (None, 1):
        assert predict_tiled(model, image, tile=44, tta=True, channel=channel).dtype == dtype


@pytest.mark.parametrize("tta, bars", [(False, 1), (True, 8)])
def test_progress_is_a_tiles_bar_cleared_when_done(model, capsys, tta, bars):
    """A 50 x 50 image, tile 60 (output 20, step 16): 3 x 3 tiles, 3 batches of 3. A bar named
    "tiles", counting batches, starts at 0/3 once per pass (8 passes with tta) and is erased at
    the end (a carriage return, no new line: it is an inner bar, e.g. under a per-image one)."""
    image = np.random.default_rng(8).standard_normal((50, 50))
    predict_tiled(model, image, tile=60, batch=3, tta=tta, progress=True)
    err = capsys.readouterr().err
    assert err.count("tiles:   0%") == err.count("| 0/3 [") == bars
    assert "batch/s" in err
    assert "\n" not in err and err.endswith("\r")
    predict_tiled(model, image, tile=60, batch=3, tta=tta)              # no bar by default
    assert capsys.readouterr().err == ""


def test_predict_tiled_pads_and_tiles_as_in_the_paper(monkeypatch):
    """The default tile is the paper's: 572 px in, 388 out, a margin of 92 (fig. 2, depth 4).
    A 400 x 300 image: rows take 2 tiles at a step of 384 (the largest multiple of 16 in 388),
    origins 0 and 384, covering 384 + 388 = 772 rows; columns one tile, 388. The image is
    mirrored by 92 px at the top and left, and to the covered extent + 92 at the bottom and
    right: 92 + 772 + 92 = 956 by 572, just what the tiles read. The result holds the K = 2
    maps, or with `channel` that one map only."""
    calls = []

    def spy(model, padded, ys, xs, tile, result, *args):
        calls.append(dict(padded=padded.shape, ys=ys, xs=xs, tile=tile, result=result.shape))
        result[...] = 0.5

    monkeypatch.setattr(infer, "run_tiles", spy)
    model = UNet(base_channels=1, depth=4)
    assert predict_tiled(model, np.zeros((400, 300))).shape == (2, 400, 300)
    assert calls[-1] == dict(padded=(1, 956, 572), ys=[0, 384], xs=[0], tile=(572, 572),
                             result=(2, 772, 388))
    assert predict_tiled(model, np.zeros((400, 300)), channel=1).shape == (400, 300)
    assert calls[-1]["result"] == (1, 772, 388)


@pytest.mark.parametrize("size, out, align, origins, extent", [
    (30, 36, 16, [0], 36),            # one tile covers it: no second one
    (36, 36, 16, [0], 36),            # exactly
    (37, 36, 16, [0, 32], 68),        # step 32 (the multiple of 16 in 36); 32 + 36 = 68
    (100, 36, 16, [0, 32, 64], 100),  # 64 + 36 = 100: the last tile ends at the edge
    (10, 4, 4, [0, 4, 8], 12),        # depth 2's smallest tile: output 4, no overlap
    (5, 2, 2, [0, 2, 4], 6),          # depth 1's
    (1, 388, 16, [0], 388),
])
def test_tile_grid_worked_cases(size, out, align, origins, extent):
    assert tile_grid(size, out, align) == (origins, extent)


def test_tile_grid_covers_with_the_fewest_aligned_tiles():
    """Origins 0, step, 2 step, ... with the step the largest multiple of the alignment not
    above the output (so no gap between tiles); the tiles cover the size, and one fewer would
    not."""
    for out, align in ((36, 16), (20, 16), (4, 4), (12, 8), (388, 16), (2, 2)):
        step = out // align * align
        for size in range(1, 3 * out + 2):
            origins, extent = tile_grid(size, out, align)
            assert origins == [k * step for k in range(len(origins))]
            assert extent == origins[-1] + out >= size
            assert len(origins) == 1 or origins[-1] < size - out + step    # one fewer: short


def test_output_tiles_smaller_than_the_alignment_are_refused():
    """Depth 3's smallest tile, 92 px, gives 4 px of output: less than the 8 px its pooling
    grid needs a step to be a multiple of, so no aligned step exists."""
    msg = "output tiles of 4 px are smaller than the network's alignment of 8 px: use a larger tile"
    with pytest.raises(ValueError, match=re.escape(msg)):
        tile_grid(50, 4, 8)
    with pytest.raises(ValueError, match=re.escape(msg)):
        predict_tiled(UNet(base_channels=1, depth=3), np.zeros((50, 50)), tile=92)
    assert tile_grid(50, 12, 8)[0][:2] == [0, 8]         # tile 100: output 12, step 8


def test_tile_grid_and_errors(model):
    origins, extent = tile_grid(100, 36, 16)      # step 32
    assert origins == [0, 32, 64] and extent == 100
    with pytest.raises(ValueError, match="tile size 46 .* 44 or 48"):
        predict_tiled(model, np.zeros((30, 30)), tile=46)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        predict_tiled(model, np.zeros((1, 1, 30, 30)), tile=44)


def test_predict_whole_gives_the_dtype_predict_tiled_gives():
    """The reference pass returns what predict_tiled returns: float32, or float64 for a float64
    model (equal to it then to float64 rounding, not float32's)."""
    image = np.random.default_rng(4).standard_normal((30, 26))
    for dtype, atol in (("float32", 1e-6), ("float64", 1e-12)):
        model = make_model(depth=2, base=2, dtype=dtype)
        whole, tiled = predict_whole(model, image), predict_tiled(model, image, tile=60)
        assert whole.dtype == tiled.dtype == np.dtype(dtype)
        np.testing.assert_allclose(whole, tiled, rtol=0, atol=atol)


def test_predict_whole_runs_on_the_models_device(monkeypatch):
    """A model on the GPU (the CuPy stand-in of tests/fake_cupy.py) gets its input there, and
    the probabilities come back to the host: the CPU model's numbers."""
    monkeypatch.setattr(backend, "_cupy", fake_cupy.make_module())
    gpu = UNet(base_channels=2, depth=2, seed=0, device="gpu")
    image = np.random.default_rng(5).standard_normal((30, 26))
    p = predict_whole(gpu, image)
    assert type(p) is np.ndarray and p.shape == (2, 30, 26)
    cpu = UNet(base_channels=2, depth=2, seed=0)
    np.testing.assert_allclose(p, predict_whole(cpu, image), rtol=1e-5, atol=1e-6)


def test_covering_tile_is_the_smallest_valid_tile_whose_output_covers_the_size():
    """Depth 1: every even T >= 18 is valid, with output T - 16 (4 convs of -2 px at level 0,
    4 at the bottom halved); depth 2: T = 44, 48, 52, ..., output T - 40."""
    assert [covering_tile(s, 1) for s in (1, 2, 3, 34, 35)] == [18, 18, 20, 50, 52]
    assert [covering_tile(s, 2) for s in (1, 4, 5, 8, 9)] == [44, 44, 48, 48, 52]


def depth1_memory(tile, c, b, k, itemsize=4, batch=1):
    """forward_memory's count for a depth-1 U-Net (c input channels, base b, k classes) written
    out layer by layer: sizes T -> T-2 -> T-4 (the skip map) -> pool p = (T-4)/2 -> p-2 -> p-4
    -> up-conv u = 2(p-4) -> concat -> u-2 -> u-4 (the output). Per image, in elements: the
    skip map + the largest layer held + the largest im2col matrix; times the dtype's bytes."""
    t, p = tile, (tile - 4) // 2
    u = 2 * (p - 4)
    convs = [(c, t, b, t - 2), (b, t - 2, b, t - 4),                 # (c_in, s_in, c_out, s)
             (b, p, 2 * b, p - 2), (2 * b, p - 2, 2 * b, p - 4),
             (2 * b, u, b, u - 2), (b, u - 2, b, u - 4)]
    cols = [9 * ci * s ** 2 for ci, _, _, s in convs]                # im2col: 9 C_in x H'W'
    held = [ci * si ** 2 + 2 * co * s ** 2 for ci, si, co, s in convs]   # input, GEMM + copy
    held.append(2 * b * u ** 2 + 2 * b * u ** 2)     # concat: the upsampled map, the concatenation
    held.append(b * (u - 4) ** 2 + 2 * k * (u - 4) ** 2)     # 1x1: input, logits, probabilities
    skip = b * (t - 4) ** 2
    return batch * itemsize * (skip + max(held) + max(cols))


def test_forward_memory_worked_out_for_a_tiny_network():
    """Depth 1, base 1, 1 channel in, 2 classes, tile 18 (output 2): the skip map 1 x 14^2 =
    196; the largest layer the first conv: its input 18^2 + its output twice 2 x 16^2 = 836;
    the largest im2col matrix the first conv's 9 x 16^2 = 2304. 3336 elements of 4 bytes."""
    config = dict(in_channels=1, n_classes=2, base_channels=1, depth=1, dtype="float32")
    assert forward_memory(config, 18) == 3336 * 4 == depth1_memory(18, 1, 1, 2)
    assert forward_memory(config, 18, batch=3) == 3 * 3336 * 4
    assert forward_memory({**config, "dtype": "float64"}, 18) == 3336 * 8
    # no dtype in the config: float32, UNet's default
    assert forward_memory({k: v for k, v in config.items() if k != "dtype"}, 18) == 3336 * 4


@pytest.mark.parametrize("tile, c, b, k, largest", [
    (18, 3, 2, 2, "the first conv"),        # 3 x 18^2 + 2 x 2 x 16^2 = 1996 elements
    (100, 1, 2, 2, "the concatenation"),    # 4 x 2 x 88^2 = 61952 (the first conv: 48416)
    (50, 1, 1, 8, "the 1x1 conv"),          # (1 + 2 x 8) x 34^2 = 19652 (the first conv: 7108)
    (50, 2, 3, 5, "the second conv"),
])
@pytest.mark.parametrize("dtype, batch", [("float32", 1), ("float64", 3)])
def test_forward_memory_counts_each_kind_of_layer(tile, c, b, k, largest, dtype, batch):
    """The count of depth1_memory, on networks where each kind of layer is the largest held."""
    config = dict(in_channels=c, n_classes=k, base_channels=b, depth=1, dtype=dtype)
    itemsize = np.dtype(dtype).itemsize
    assert forward_memory(config, tile, batch) == depth1_memory(tile, c, b, k, itemsize, batch)


def test_forward_memory_names_a_tile_that_does_not_fit():
    config = dict(in_channels=1, n_classes=2, base_channels=1, depth=2)
    with pytest.raises(ValueError, match=r"^tile size 46 does not fit a depth-2 U-Net.* 44 or 48"):
        forward_memory(config, 46)


def test_choose_tile_is_the_largest_valid_tile_within_the_budget():
    """Depth 1 (tiles 18, 20, 22, ...): the largest tile whose estimate, for the batch asked
    for, is at most the budget; max_size caps it; a max_size below the smallest tile gives the
    smallest tile."""
    model = UNet(in_channels=1, n_classes=2, base_channels=1, depth=1)
    cfg = model.config
    assert choose_tile(model, forward_memory(cfg, 30)) == 30               # exactly: it fits
    assert choose_tile(model, forward_memory(cfg, 32) - 1) == 30
    assert choose_tile(model, forward_memory(cfg, 30, batch=2), batch=2) == 30
    assert forward_memory(cfg, 40) < forward_memory(cfg, 30, batch=2)     # batch 1 would be 40+
    assert choose_tile(model, 2**40, max_size=31) == 30
    assert choose_tile(model, 2**40, max_size=10) == 18
    assert choose_tile(model, 2**40) == 16384                  # the largest tile it considers


def test_choose_tile_says_what_the_smallest_tile_needs():
    """Depth 1, base 1: the smallest tile, 18 px, needs 3336 x 4 = 13344 B per image (see
    test_forward_memory_worked_out_for_a_tiny_network): 26688 B = 26.1 KiB for a batch of 2."""
    model = UNet(in_channels=1, n_classes=2, base_channels=1, depth=1)
    msg = ("a memory budget of 1.5 KiB is too small for this network: its smallest tile "
           "(18 px, batch 2) needs about 26.1 KiB")
    with pytest.raises(ValueError, match=re.escape(msg)):
        choose_tile(model, 1536, batch=2)
    with pytest.raises(ValueError, match=re.escape("(18 px, batch 1) needs about 13 KiB")):
        choose_tile(model, 1536, max_size=10)


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (512, "512 B"), (1024, "1 KiB"), (1536, "1.5 KiB"),  # 1.5 x 1024
    (1024 ** 2, "1 MiB"), (int(2.25 * 1024 ** 2), "2.25 MiB"), (5 * 1024 ** 3, "5 GiB"),
    (999, "999 B"), (1234, "1.21 KiB"),                             # 1234 / 1024 = 1.205
    (1000, "1000 B"), (1023, "1023 B"), (1000 * 1024, "1000 KiB"),  # not "1e+03 B"
    (1023 * 1024 ** 2, "1023 MiB"),
])
def test_bytes_in_binary_units(n, text):
    """A byte count in the largest unit (B, KiB, MiB, GiB: powers of 1024) that keeps it
    under 1024, to 3 significant digits; from 1000 to 1023 in whole units (3 significant
    digits would be 1e+03)."""
    assert _bytes(n) == text


def test_bytes_beyond_the_largest_unit_stay_in_gib():
    assert _bytes(3 * 1024 ** 4) == "3072 GiB"                 # 3 TiB
    assert _bytes(1024 ** 4 * 1.5 + 0.4 * 1024 ** 3) == "1536 GiB"
