"""Rules of tinyunet/data, each stated on a small case worked out beside it:

- where the shared data sets are by default (images.shared_data_dir, isbi.default_isbi_dir) and
  what load_folder stacks;
- what load_stack reads: JPEG files (.jpg, .jpeg) and RGB PNGs (made grey, not a stack of rows);
- normalisation of a constant image (std 0 is taken as 1);
- validate_labels: the label values accepted (0 and one cell value; 0 / 1 read as 0 / 255) and
  the whole message for others (the name, the valid values, the first ten found);
- challenge sets: a frame file that is a stack is refused by name; an unannotated cell is grown
  by the margin (IGNORE_MARGIN = 5 px, 4-connected steps), never over a reference cell;
- load_source: the built-in synthetic set (12 slices of 256 x 256, seed 0 by default) and its
  stated properties (seeded, uint8, dark membranes about as much of the image as ISBI's, jittered
  cells of different sizes, organelles all over the image, no white membrane pixel, grey values
  clipped, not wrapped), the data of
  each kind of folder, and the one-line messages for a missing folder;
- choose_data and parse_slices: the flags their messages name (--data as given), the built-in
  set's seed (0 unless --data-seed), and the last slice that exists;
- TileSampler: float32 images whatever type they come in, the 8 flips / rotations equally likely,
  the grey change x * exp(z1) + z2 of docs/09-training.md, bit for bit ("paper"), and the wide
  one (gain and offset with three times the spread, a blur and noise, each drawn every step)
  replayed from its draws, its labels and weights the paper's, an unknown kind refused;
- targets: the weighting named ("balanced", "none") and the w0 and sigma given reach the weight
  map;
- check_image / load_stack: a colour label image is refused naming RGB or RGBA, the colour
  warning points at load_stack's caller; a file is decoded as the format its suffix names;
- instance_labels: whole-number floats and ids up to the int32 maximum are taken, inf and larger
  ids refused;
- load_pairs / load_isbi: their messages name the folder, the suffixes or the files looked for;
  an instance mask in colour is refused as a label image;
- TileSampler: the output tile's origin takes every place where it fits, mirrored context
  beyond the image, and no other (narrower images: O - W + 1 places).
"""
import re
import warnings

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from tinyunet.data import (DataError, DataNotFoundError, default_isbi_dir, load_folder,
                           load_stack, normalisation, normalise, synthetic_em, validate_labels)
from tinyunet.data import images as images_module
from tinyunet.data import selection
from tinyunet.data.ctc import IGNORE_MARGIN, load_ctc, mark_unannotated
from tinyunet.data.images import shared_data_dir
from tinyunet.data.samples import AUGMENTS, TileSampler
from tinyunet.data.selection import choose_data, load_source, parse_slices
from tinyunet.data.targets import targets
from tinyunet.errors import DataWarning
from tinyunet.kernels.weight_map import instances_from_mask, weight_map

FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


# ---- where the data are by default -------------------------------------------------------------

def test_shared_data_dir_is_the_env_folder_else_the_first_that_exists(tmp_path, monkeypatch):
    """$TINYUNET_DATA_DIR/name; else, the first that exists of ../shared/data/name beside the
    checkout (only where tinyunet runs from a checkout: its pyproject.toml is there),
    ../shared/data/name and ./data/name beside the working folder; none: the first of them."""
    tmp = tmp_path.resolve()
    checkout = tmp / "checkout"                  # tinyunet/data/images.py of a fake checkout
    (checkout / "tinyunet" / "data").mkdir(parents=True)
    monkeypatch.setattr(images_module, "__file__",
                        str(checkout / "tinyunet" / "data" / "images.py"))
    project = tmp / "work" / "project"           # the working folder
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("TINYUNET_DATA_DIR", str(tmp / "env"))
    assert shared_data_dir("set") == tmp / "env" / "set"        # whether it exists or not
    monkeypatch.delenv("TINYUNET_DATA_DIR")
    (checkout / "pyproject.toml").write_text("")
    beside_checkout = tmp / "shared" / "data" / "set"
    beside_work, in_work = tmp / "work" / "shared" / "data" / "set", project / "data" / "set"
    assert shared_data_dir("set") == beside_checkout             # none exists: the checkout's
    in_work.mkdir(parents=True)
    assert shared_data_dir("set") == in_work                     # the only one there
    beside_work.mkdir(parents=True)
    assert shared_data_dir("set") == beside_work                 # ../shared before ./data
    beside_checkout.mkdir(parents=True)
    assert shared_data_dir("set") == beside_checkout             # the checkout's first
    (checkout / "pyproject.toml").unlink()                       # an installed tinyunet
    assert shared_data_dir("set") == beside_work


def test_default_isbi_dir_is_its_env_folder_else_the_shared_isbi2012(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYUNET_ISBI_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("TINYUNET_DATA_DIR", str(tmp_path / "data"))
    assert default_isbi_dir() == tmp_path / "mine"
    monkeypatch.delenv("TINYUNET_ISBI_DIR")
    assert default_isbi_dir() == tmp_path / "data" / "isbi2012"


def test_load_folder_stacks_the_images_of_a_folder_in_name_order(tmp_path):
    """Every image file (by name: a.tif, then the two pages of b.tif), other files left out;
    labels=True reaches load_stack (a colour image is refused); no image: a DataNotFoundError."""
    a, b = np.full((1, 4, 5), 7, np.uint8), np.arange(40, dtype=np.uint8).reshape(2, 4, 5)
    tifffile.imwrite(tmp_path / "b.tif", b)
    tifffile.imwrite(tmp_path / "a.tif", a)
    (tmp_path / "notes.txt").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)             # a.tif is constant: said so
        np.testing.assert_array_equal(load_folder(tmp_path), np.concatenate([a, b]))
        np.testing.assert_array_equal(load_folder(tmp_path, "b*"), b)
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError, match=r"c\.tif: a colour image \(RGB\) where a label image"):
        load_folder(tmp_path, labels=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"empty: the folder holds no images \(ending "
                                                r"\.png, \.tif, \.tiff, \.jpg, \.jpeg\)"):
        load_folder(tmp_path / "empty")


# ---- load_stack, normalisation -----------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".JPG"])
def test_a_jpeg_file_is_read(tmp_path, suffix):
    """A grey JPEG (quality 100 of a smooth ramp: decoded within a grey value or two) is one
    image (1, H, W), whichever of its suffixes it has."""
    import imagecodecs
    ramp = (np.add.outer(np.arange(24), np.arange(32)) * 4).astype(np.uint8)
    (tmp_path / f"a{suffix}").write_bytes(imagecodecs.jpeg8_encode(ramp, level=100))
    stack = load_stack(tmp_path / f"a{suffix}")
    assert stack.shape == (1, 24, 32) and stack.dtype == np.uint8
    assert np.abs(stack[0].astype(int) - ramp).max() <= 2


def test_an_rgb_png_is_made_grey_not_read_as_a_stack_of_rows(tmp_path):
    """An RGB PNG of H x W is one grey image (1, H, W), the mean of R, G and B, with a warning
    (read as it comes, it would be H images of W x 3)."""
    import imagecodecs
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgb))
    with pytest.warns(DataWarning, match=r"a colour image \(RGB\): segmented as grey"):
        stack = load_stack(tmp_path / "a.png")
    np.testing.assert_array_equal(stack, rgb.mean(axis=-1).astype(np.uint8)[None])


def test_a_constant_image_has_std_1_so_normalise_only_shifts(tmp_path):
    """Grey 51 throughout: x / 255 = 0.2, std 0, taken as 1 (no division by 0, no rescaling):
    normalise gives x / 255 - 0.2 = 0 here, and 1 - 0.2 = 0.8 for a white image."""
    img = np.full((1, 3, 3), 51, np.uint8)
    mean, std = normalisation(img)
    assert mean == pytest.approx(0.2) and std == 1.0
    np.testing.assert_allclose(normalise(np.full((1, 2, 2), 255, np.uint8), mean, std), 0.8,
                               rtol=1e-6)


# ---- validate_labels: the label values accepted and refused -------------------------------------

def test_label_values_accepted_are_0_and_one_cell_value_and_0_1_is_read_as_0_255():
    """0 (membrane) and 255 (cell) are the labels, either alone too; a binary 0 / 1 mask is read
    as 0 / 255 with a line that says so; with cell=(255, 1) (a scorer's) 0 / 1 is kept as it is."""
    for ok in ([0, 255], [255, 255], [0, 0]):
        labels = np.array([ok], np.uint8)
        assert validate_labels(labels) is labels
    with pytest.warns(DataWarning, match=r"^labels: labels 0 and 1, read as 0 \(membrane or "
                                         r"background\) and 1 \(cell interior\), as 0 and 255 are"):
        np.testing.assert_array_equal(validate_labels(np.array([[0, 1, 1]], np.uint8)),
                                      [[0, 255, 255]])
    ones = np.array([[0, 1]], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # no warning: 1 is a cell value
        assert validate_labels(ones, cell=(255, 1)) is ones


@pytest.mark.parametrize("values, cell, message", [
    # one other value: named; 0 / 1 is offered as the other format when 1 is not a cell value
    ([0, 255, 7], (255,), "labels: label values must be 0 (membrane) and 255 (cell interior) "
                          "(or 0 and 1); found also [7]"),
    # a scorer's cell=(255, 1): 1 is a cell value already, no "(or 0 and 1)"
    ([0, 7], (255, 1), "labels: label values must be 0 (membrane) and 255 or 1 (cell interior); "
                       "found also [7]"),
    # 0, 1 and 255 together are not one cell value (0 / 255 plus 1, or 0 / 1 plus 255)
    ([0, 1, 255], (255,), "labels: label values must be 0 (membrane) and 255 (cell interior) "
                          "(or 0 and 1); found also [1]"),
    # ten other values: all ten shown, nothing left out, so no " ..."
    (list(range(11)), (255,), "labels: label values must be 0 (membrane) and 255 (cell interior) "
                              "(or 0 and 1); found also [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"),
    # eleven: the first ten, then " ..." for the rest
    (list(range(12)), (255,), "labels: label values must be 0 (membrane) and 255 (cell interior) "
                              "(or 0 and 1); found also [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] ..."),
], ids=["one-other", "scorer-cells", "0-1-and-255", "ten-others", "eleven-others"])
def test_other_label_values_are_refused_with_what_was_found_and_what_is_valid(values, cell,
                                                                              message):
    """The whole message: the name ("labels" unless given), the valid values, the others found
    (ten at most, " ..." when there are more)."""
    with pytest.raises(DataError) as e:
        validate_labels(np.array([values], np.uint16), cell=cell)
    assert str(e.value) == message
    with pytest.raises(DataError, match=r"^train\.tif: label values must be"):
        validate_labels(np.array([values], np.uint16), "train.tif", cell=cell)


# ---- challenge sets: one image per file, the unannotated margin --------------------------------

def write_ctc(folder, frame):
    """A challenge set of one sequence 01 with one reference frame t000 (16 x 16, cell 5)."""
    (folder / "01").mkdir(parents=True)
    (folder / "01_GT" / "SEG").mkdir(parents=True)
    mask = np.zeros((16, 16), np.uint16)
    mask[2:9, 2:9] = 5
    tifffile.imwrite(folder / "01" / "t000.tif", frame, photometric="minisblack")
    tifffile.imwrite(folder / "01_GT" / "SEG" / "man_seg000.tif", mask)
    return folder


def test_a_challenge_frame_that_is_a_stack_is_refused_with_its_name(tmp_path):
    """A frame file holds one 2-D image; a stack of two pages is a DataError that names the file
    and says how many it holds."""
    frame = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    folder = write_ctc(tmp_path / "set", frame)
    with pytest.raises(DataError) as e:
        load_ctc(folder)
    assert str(e.value) == (f"{folder / '01' / 't000.tif'}: expected one 2-D image, "
                            f"got a stack of 2")


@pytest.mark.parametrize("margin", [IGNORE_MARGIN, 2])
def test_an_unannotated_cell_is_grown_by_the_margin_in_city_block_steps(margin):
    """The silver cell no reference cell covers (rows and columns 12-17) is marked -1 with every
    pixel within `margin` steps of it (4-connected: |dy| + |dx| <= margin; the default
    IGNORE_MARGIN = 5 px of the module docstring), except over a reference cell (columns 20-23,
    3 px away) and outside the image."""
    assert IGNORE_MARGIN == 5
    silver = np.zeros((32, 32), np.int32)
    silver[12:18, 12:18] = 4
    mask = np.zeros((32, 32), np.int32)
    mask[12:18, 20:24] = 1                                   # annotated, not in the silver truth
    out = (mark_unannotated(mask, silver) if margin == IGNORE_MARGIN
           else mark_unannotated(mask, silver, margin=margin))
    y, x = np.mgrid[:32, :32]
    dy = np.maximum.reduce([12 - y, np.zeros_like(y), y - 17])
    dx = np.maximum.reduce([12 - x, np.zeros_like(x), x - 17])
    expected = np.where(dy + dx <= margin, -1, 0)
    expected[mask == 1] = 1
    np.testing.assert_array_equal(out, expected)


# ---- the built-in synthetic set ----------------------------------------------------------------

@pytest.fixture(scope="module")
def builtin():
    return load_source("synthetic")


def test_the_builtin_set_is_12_slices_of_256_from_seed_0(builtin):
    """--data synthetic: 12 slices of 256 x 256 (SYNTHETIC), uint8 images and 0 / 255 labels;
    with no seed given, seed 0 (choose_data's default too), the same set each time."""
    assert builtin.images.shape == builtin.labels.shape == (12, 256, 256)
    assert builtin.images.dtype == builtin.labels.dtype == np.uint8
    assert builtin.kind == "membranes" and builtin.partial == [False] * 12
    assert set(np.unique(builtin.labels)) == {0, 255}
    images, labels = synthetic_em(n=12, size=256, seed=0)
    np.testing.assert_array_equal(builtin.images, images)
    np.testing.assert_array_equal(builtin.labels, labels)
    other = synthetic_em(n=1, size=256, seed=1)[0]
    assert (other[0] != images[0]).mean() > 0.5               # another seed, another set


def test_choose_data_takes_the_builtin_set_of_seed_0_or_the_seed_given(monkeypatch):
    """choose_data("synthetic"): seed 0 when no --data-seed is given (recorded as 0), else the
    seed given; the default split of its 12 slices trains on 0-9 and validates on 10-11 (the
    last sixth); described as "synthetic EM (built in)"."""
    monkeypatch.setitem(selection.SYNTHETIC, "size", 32)         # 12 small slices
    for given, seed in [(None, 0), (5, 5)]:
        record, ((train, _), (val, _)), description = choose_data("synthetic", data_seed=given)
        images, _ = synthetic_em(n=12, size=32, seed=seed)
        assert record["seed"] == seed and description == "synthetic EM (built in)"
        np.testing.assert_array_equal(train, images[:10])
        np.testing.assert_array_equal(val, images[10:])


def test_the_builtin_membranes_are_as_much_of_the_image_as_isbis_and_drawn_dark(builtin):
    """The membranes (label 0) cover 22 % of the ISBI 2012 training slices (16.8-27.0 % per
    slice, 21.96 % in all); the built-in set is made to look like them: 22 % +- 2.5 points over
    its 12 slices. They are dark bands: none of their pixels is brighter than a cell is ever
    drawn (0.8 of white: 204)."""
    membrane = builtin.labels == 0
    assert abs(membrane.mean() - 0.22) < 0.025
    assert builtin.images[membrane].max() < 0.8 * 255
    assert builtin.images[membrane].mean() < builtin.images[~membrane].mean() - 80


def test_the_builtin_cells_are_a_jittered_tessellation_not_a_grid(builtin):
    """Jittered seeds give cells of different sizes: among the cells that do not touch the
    image border (4-connected components of the interior), the areas vary by more than a tenth
    of their mean in every slice (seeds on a regular grid: all the same, 0)."""
    for lab in builtin.labels:
        cells, n = ndi.label(lab == 255, FOUR)
        areas = np.bincount(cells.ravel())[1:]
        border = set(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]).tolist())
        inner = np.array([a for i, a in enumerate(areas, 1) if i not in border])
        assert inner.size > 20 and inner.std() / inner.mean() > 0.1


def test_the_builtin_organelles_are_all_over_the_image(builtin):
    """Organelles (dark discs, 0.3 darker than their cell) are placed uniformly over the image:
    the dark pixels deep inside the cells (2 px or more from a membrane, smoothed grey below
    0.45 of white; a cell is drawn at 0.55 or brighter) fall in each quarter of the image, at
    least a tenth of them in each over the 12 slices (a uniform placing: a quarter)."""
    quarters = np.zeros((2, 2))
    for img, lab in zip(builtin.images, builtin.labels):
        deep = ndi.binary_erosion(lab == 255, np.ones((5, 5)))
        dark = deep & (ndi.gaussian_filter(img.astype(float), 1) < 0.45 * 255)
        quarters += [[dark[:128, :128].sum(), dark[:128, 128:].sum()],
                     [dark[128:, :128].sum(), dark[128:, 128:].sum()]]
    assert quarters.sum() > 1000 and (quarters / quarters.sum()).min() > 0.1


def test_the_builtin_grey_values_are_clipped_to_black_and_white_not_wrapped(builtin):
    """Grey values are clipped to 0 .. 255 before they become uint8: a value past white (256)
    would wrap to black (0), past black (-1) to white (255), a jump of about 255 from its
    neighbours. The images are blurred (sigma 1 px) and then noisy (std 0.05 of white: 12.75
    grey values; a pixel minus the mean of its 8 neighbours: std 13.5), so no pixel is 128 (half
    the grey range, over 9 std) or more from the mean of its 8 neighbours."""
    ring = np.ones((3, 3)) / 8
    ring[1, 1] = 0
    for img in builtin.images.astype(np.float64):
        assert np.abs(img - ndi.convolve(img, ring, mode="reflect")).max() < 128


# ---- load_source: the kinds of folders, and their messages ----------------------------------------

def test_image_mask_pairs_are_instance_labels(tmp_path):
    """A folder of *image* / *mask* pairs: the masks (one id per cell, 0 = background) are the
    labels, kind "instances", described as image/mask pairs of the folder."""
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 16, 16), np.uint16)
    masks[:, 2:7, 2:7], masks[:, 9:14, 3:12] = 1, 300           # ids above 255
    for k in range(2):
        tifffile.imwrite(tmp_path / f"{k}_image.tif", rng.integers(0, 256, (16, 16), np.uint8))
        tifffile.imwrite(tmp_path / f"{k}_mask.tif", masks[k])
    data = load_source(str(tmp_path), str(tmp_path))
    assert data.kind == "instances" and data.labels.dtype == np.int32
    np.testing.assert_array_equal(data.labels, masks)
    assert data.images.shape == (2, 16, 16)
    assert data.description == f"image/mask pairs ({tmp_path})" and data.partial == [False] * 2


def test_image_label_pairs_are_membrane_labels_every_slice_fully_annotated(tmp_path):
    """A folder of *image* / *label* pairs (no *mask*): membrane labels (0 / 255), kind
    "membranes"; partial is one False per slice (as for every source but a challenge set) and
    there are no silver frames (silver None)."""
    rng = np.random.default_rng(0)
    labels = np.full((3, 16, 16), 255, np.uint8)
    labels[:, 7, :] = 0                                        # one membrane row
    for k in range(3):
        tifffile.imwrite(tmp_path / f"{k}_image.tif", rng.integers(0, 256, (16, 16), np.uint8))
        tifffile.imwrite(tmp_path / f"{k}_label.tif", labels[k])
    data = load_source(str(tmp_path), str(tmp_path))
    assert data.kind == "membranes" and data.description == f"image/label pairs ({tmp_path})"
    np.testing.assert_array_equal(data.labels, labels)
    assert data.partial == [False] * 3 and data.silver is None


def test_an_isbi_folder_and_a_challenge_set_are_their_files(tmp_path):
    """The ISBI files: their images and labels, kind "membranes". A challenge set: its
    reference frames, named sequence/frame."""
    images, labels = synthetic_em(n=3, size=32, seed=0)
    isbi = tmp_path / "isbi"
    isbi.mkdir()
    tifffile.imwrite(isbi / "train-volume.tif", images, photometric="minisblack")
    tifffile.imwrite(isbi / "train-labels.tif", labels, photometric="minisblack")
    data = load_source(str(isbi), "isbi")
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.kind == "membranes" and data.description == f"ISBI 2012 ({isbi})"
    ctc = tmp_path / "ctc"
    (ctc / "01").mkdir(parents=True)
    (ctc / "01_GT" / "SEG").mkdir(parents=True)
    for t in (0, 3):
        mask = np.zeros((16, 16), np.uint16)
        mask[2:9, 2:9] = 5
        tifffile.imwrite(ctc / "01" / f"t{t:03d}.tif", (mask > 0).astype(np.uint8) * 200 + 20)
        tifffile.imwrite(ctc / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", mask)
    data = load_source(str(ctc), str(ctc))
    assert data.kind == "instances" and data.names == ["01/t000", "01/t003"]
    assert data.description == f"cell tracking challenge set ({ctc}): 2 annotated frames, 0 partial"
    assert data.silver is None                                 # without --silver: no silver frames


@pytest.mark.parametrize("present, missing", [("train-volume.tif", "train-labels.tif"),
                                              ("train-labels.tif", "train-volume.tif")])
def test_a_folder_with_one_of_the_isbi_files_says_which_one_is_missing(tmp_path, present,
                                                                       missing):
    """Either ISBI file makes the folder an ISBI folder: the other one missing is named (not
    "holds neither the ISBI files ..."), with the files the challenge has."""
    tifffile.imwrite(tmp_path / present, np.zeros((2, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(DataError) as e:
        load_source(str(tmp_path), str(tmp_path))
    assert str(e.value) == (f"{tmp_path}: missing {missing} (the ISBI 2012 challenge files "
                            f"train-volume.tif, train-labels.tif, test-volume.tif; see the README)")


def test_a_missing_folder_is_one_line_that_names_it_as_given(tmp_path):
    """--data as given, then the folder where it is not the same; "the run's data" for the
    recorded one; for --data isbi, where that is looked for."""
    missing = tmp_path / "nowhere"
    cases = [(str(missing), f"--data {missing}: no such folder"),
             ("nowhere", f"--data nowhere ({missing}): no such folder"),
             (None, f"the run's data ({missing}): no such folder"),
             ("isbi", f"--data isbi ({missing}): no such folder (`--data isbi` is "
                      f"$TINYUNET_ISBI_DIR, else ../shared/data/isbi2012 beside the checkout)")]
    for arg, message in cases:
        with pytest.raises(DataError) as e:
            load_source(str(missing), arg)
        assert str(e.value) == message


# ---- choose_data, parse_slices ---------------------------------------------------------------

def test_choose_data_names_the_data_flag_as_given(tmp_path, monkeypatch):
    """A new run's data that cannot be used: the message names --data as the user gave it, and
    the folder it stands for where that differs (not "the run's data", which is a resumed run's)."""
    missing = tmp_path / "nowhere"
    monkeypatch.chdir(tmp_path)
    for arg, message in [(str(missing), f"--data {missing}: no such folder"),
                         ("nowhere", f"--data nowhere ({missing}): no such folder")]:
        with pytest.raises(DataError) as e:
            choose_data(arg)
        assert str(e.value) == message


@pytest.mark.parametrize("flag, kw", [("--train-slices", "train_slices"),
                                      ("--val-slices", "val_slices")])
def test_a_slice_that_does_not_exist_names_its_flag(monkeypatch, flag, kw):
    monkeypatch.setitem(selection.SYNTHETIC, "size", 32)         # 12 small slices
    with pytest.raises(DataError) as e:
        choose_data("synthetic", **{kw: "3,12"})
    assert str(e.value) == f"{flag} 3,12: slice 12 does not exist: the data has 12 slices (0-11)"


def test_a_data_seed_that_is_not_the_runs_says_the_runs():
    run = dict(source="synthetic", seed=3, train_slices="0-9", val_slices="10-11")
    with pytest.raises(DataError) as e:
        choose_data(data_seed=5, run=run)
    assert str(e.value) == "--data-seed 5 is not this run's (3)"


def test_parse_slices_takes_0_to_n_minus_1_and_names_slices_by_default():
    """n slices are 0 .. n-1: slice n does not exist. Without a flag the messages say --slices."""
    assert parse_slices("0-2,4", 5) == [0, 1, 2, 4]
    assert parse_slices("4", 5) == [4]
    with pytest.raises(DataError) as e:
        parse_slices("5", 5)
    assert str(e.value) == "--slices 5: slice 5 does not exist: the data has 5 slices (0-4)"
    with pytest.raises(DataError, match=r"^--slices 'x': expected slice numbers"):
        parse_slices("x", 5)


# ---- TileSampler ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
def test_the_sampler_takes_its_images_as_float32(dtype):
    """Images of another type are taken as float32 (as the docstring says they are): the
    samples of a float64 or uint8 stack are, bit for bit, those of its float32 copy (kept as
    they come, a float64 image would be interpolated in float64, a uint8 one rounded)."""
    rng = np.random.default_rng(0)
    images = (rng.random((2, 40, 40)) * 200).astype(dtype)
    classes = (rng.random((2, 40, 40)) > 0.5).astype(np.uint8)
    weights = rng.random((2, 40, 40)).astype(np.float32)
    given = TileSampler(images, classes, weights, tile=28, out=12)
    copy = TileSampler(images.astype(np.float32), classes, weights, tile=28, out=12)
    for seed in range(3):
        for a, b in zip(given.sample(np.random.default_rng(seed)),
                        copy.sample(np.random.default_rng(seed))):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_the_eight_flips_and_rotations_are_equally_likely():
    """flips=True: one of the 4 rotations, then a mirror or not, each equally likely: over 800
    samples of an 8 x 8 image (tile = output = image: no shift), each rotation 200 +- 50 times
    (4 standard deviations: 12) and the mirrored ones 400 +- 56 (4 sd: 14 each way)."""
    img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    s = TileSampler(img, np.zeros((1, 8, 8), np.uint8), np.ones((1, 8, 8), np.float32),
                    tile=8, out=8, elastic=False, grey=False)
    views = [np.rot90(img[0], r)[:, ::-1] if m else np.rot90(img[0], r)
             for m in (0, 1) for r in range(4)]
    rng, counts = np.random.default_rng(0), np.zeros(8, int)
    for _ in range(800):
        x = s.sample(rng)[0][0, 0]
        counts[int(np.argmin([np.abs(x - v).max() for v in views]))] += 1
    rotations, mirrored = counts[:4] + counts[4:], counts[4:].sum()
    assert (abs(rotations - 200) < 50).all() and abs(mirrored - 400) < 56, counts


def grey_case(data_seed):
    """A case for replaying the grey-value change: two 30 x 30 normal images, all cell of weight
    1, tiles 20 -> 8 without elastic deformation or flips, so that after the tile's place the
    grey change is all the sampler draws. (data, sampler keywords)."""
    images = np.random.default_rng(data_seed).standard_normal((2, 30, 30)).astype(np.float32)
    data = images, np.ones((2, 30, 30), np.uint8), np.ones((2, 30, 30), np.float32)
    return data, dict(tile=20, out=8, elastic=False, flips=False)


def grey_free_tile(data, kw, seed):
    """The tile of `seed` without the grey change, and the generator after its draws: what it
    draws next is the grey change's."""
    rng = np.random.default_rng(seed)
    return TileSampler(*data, grey=False, **kw).sample(rng)[0], rng


def test_the_grey_change_is_a_gain_exp_z1_and_an_offset_z2():
    """docs/09-training.md: gain exp(N(0, 0.1)), offset N(0, 0.1), drawn after the tile and its
    geometry: x * exp(z1) + z2, where z1, z2 are the next two N(0, 0.1) draws of the same rng."""
    data, kw = grey_case(0)
    for seed in range(4):
        plain, plain_rng = grey_free_tile(data, kw, seed)
        z1, z2 = plain_rng.normal(0.0, 0.1), plain_rng.normal(0.0, 0.1)
        changed = TileSampler(*data, **kw).sample(np.random.default_rng(seed))[0]
        np.testing.assert_allclose(changed, plain * np.exp(z1) + z2, rtol=1e-5, atol=1e-6)


def test_the_paper_grey_change_is_bit_for_bit_the_float32_gain_and_offset():
    """augment "paper" (the default, which resumed runs and seeds depend on): the tile times
    float32(exp(z1)) plus float32(z2), in float32, bit for bit; nothing else is drawn."""
    data, kw = grey_case(1)
    for seed in range(3):
        plain, plain_rng = grey_free_tile(data, kw, seed)
        gain, offset = np.float32(np.exp(plain_rng.normal(0.0, 0.1))), np.float32(
            plain_rng.normal(0.0, 0.1))
        for sampler in (TileSampler(*data, **kw), TileSampler(*data, augment="paper", **kw)):
            paper_rng = np.random.default_rng(seed)
            x = sampler.sample(paper_rng)[0]
            assert x.dtype == np.float32
            np.testing.assert_array_equal(x, plain * gain + offset)
            assert paper_rng.bit_generator.state == plain_rng.bit_generator.state


def gaussian_blur(tile, sigma):
    """A Gaussian blur written out: the kernel exp(-k^2 / (2 sigma^2)), k = -r..r with
    r = round(4 sigma), normalised to sum 1, along the rows and then the columns of the tile
    extended by its mirror image with the edge pixel repeated (scipy's mode "reflect")."""
    r = int(4 * sigma + 0.5)
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    t = np.pad(tile.astype(np.float64), r, mode="symmetric")
    n = tile.shape[0]
    rows = sum(k[i] * t[:, i:i + n] for i in range(2 * r + 1))          # (n + 2r, n)
    return sum(k[i] * rows[i:i + n] for i in range(2 * r + 1))          # (n, n)


def test_the_wide_grey_change_replays_from_its_draws():
    """augment "wide", after the tile and its geometry, draws in this order every step: z1, z2
    ~ N(0, 0.3); a blur's coin (< 1/2: blur) and its sigma ~ U(0.5, 2); the noise's coin and
    its std ~ U(0, 0.1); a float32 standard normal per pixel. The tile is x * exp(z1) + z2,
    blurred (Gaussian, mirrored at the edges) if its coin says so, plus std * noise if its coin
    says so: replayed from the paper-free tile of the same seed, with the blur written out. Each
    step ends at the same place of the stream, whichever branches it took."""
    data, kw = grey_case(0)
    seen = set()
    for seed in range(12):
        plain, plain_rng = grey_free_tile(data, kw, seed)
        z1, z2 = plain_rng.normal(0.0, 0.3), plain_rng.normal(0.0, 0.3)
        blur, sigma = plain_rng.random() < 0.5, plain_rng.uniform(0.5, 2.0)
        noisy, std = plain_rng.random() < 0.5, plain_rng.uniform(0.0, 0.1)
        noise = plain_rng.standard_normal((20, 20), dtype=np.float32)
        want = plain[0, 0].astype(np.float64) * np.exp(z1) + z2
        if blur:
            want = gaussian_blur(want, sigma)
        if noisy:
            want = want + std * noise
        wide_rng = np.random.default_rng(seed)
        x = TileSampler(*data, augment="wide", **kw).sample(wide_rng)[0]
        assert x.dtype == np.float32 and x.shape == (1, 1, 20, 20)
        np.testing.assert_allclose(x[0, 0], want, rtol=1e-5, atol=1e-5)
        assert wide_rng.bit_generator.state == plain_rng.bit_generator.state, seed
        seen.add((bool(blur), bool(noisy)))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_the_wide_change_leaves_labels_and_weights_as_the_papers():
    """Elastic deformation and flips on: "wide" draws after the geometry, so a seed gives the
    paper's tile position, deformation, flip, labels and weights; only the image differs."""
    rng = np.random.default_rng(2)
    images = rng.standard_normal((2, 40, 40)).astype(np.float32)
    classes = (rng.random((2, 40, 40)) > 0.5).astype(np.uint8)
    weights = rng.random((2, 40, 40)).astype(np.float32)
    paper, wide = (TileSampler(images, classes, weights, tile=28, out=12, augment=a)
                   for a in AUGMENTS)
    for seed in range(4):
        px, py, pw = paper.sample(np.random.default_rng(seed))
        wx, wy, ww = wide.sample(np.random.default_rng(seed))
        np.testing.assert_array_equal(wy, py)
        np.testing.assert_array_equal(ww, pw)
        assert (wy.dtype, ww.dtype, wx.dtype) == (np.uint8, np.float32, np.float32)
        assert not np.allclose(wx, px)


def test_an_unknown_augment_is_refused_naming_the_valid_ones():
    assert AUGMENTS == ("paper", "wide")
    ones = np.ones((1, 20, 20), np.float32)
    with pytest.raises(ValueError) as e:
        TileSampler(ones, ones.astype(np.uint8), ones, tile=20, out=8, augment="wider")
    assert str(e.value) == "augment must be 'paper' or 'wide', got 'wider'"


# ---- targets ----------------------------------------------------------------------------------

def two_cells():
    """12 x 12: a membrane of columns 5 and 6 between two cells: 24 of 144 pixels membrane."""
    lab = np.full((12, 12), 255, np.uint8)
    lab[:, 5:7] = 0
    return lab


@pytest.mark.parametrize("weighting, membrane, cell", [("balanced", 3.0, 0.6),
                                                       ("none", 1.0, 1.0)])
def test_the_weighting_named_is_the_one_made(weighting, membrane, cell):
    """balanced: w_c = 1 / (2 * class frequency): membrane 1 / (2 / 6) = 3, cells
    1 / (2 * 5 / 6) = 0.6 (mean 1); none: ones."""
    _, w = targets(two_cells()[None], "membranes", weighting)
    np.testing.assert_allclose(w[0], np.where(two_cells() == 0, membrane, cell), rtol=1e-6)


@pytest.mark.parametrize("w0, sigma", [(10.0, 2.0), (10.0, 5.0), (4.0, 5.0)])
def test_the_w0_and_sigma_given_are_the_border_terms(w0, sigma):
    """paper: w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) on the membrane: column 5 is d1 = 1 from
    the left cell and d2 = 2 from the right one: 3 + w0 exp(-9 / (2 sigma^2)); the cells 0.6."""
    _, w = targets(two_cells()[None], "membranes", "paper", w0=w0, sigma=sigma)
    border = 3 + w0 * np.exp(-9 / (2 * sigma ** 2))
    np.testing.assert_allclose(w[0, 0], [0.6] * 5 + [border] * 2 + [0.6] * 5, rtol=1e-5)
    np.testing.assert_array_equal(
        w[0], weight_map(instances_from_mask(two_cells(), 255), w0=w0, sigma=sigma))


# ---- check_image, load_stack, instance_labels -------------------------------------------------

@pytest.mark.parametrize("channels, name", [(3, "RGB"), (4, "RGBA")])
def test_a_colour_label_image_is_refused_naming_rgb_or_rgba(channels, name):
    """A label image with 3 samples per pixel is "RGB", with 4 "RGBA": refused (no colours to
    average in a label image), saying which and what is expected instead."""
    arr = np.zeros((6, 5, channels), np.uint8)
    with pytest.raises(DataError, match=rf"^lab\.png: a colour image \({name}\) where a label "
                                        r"image \(one grey value per class or cell\) is expected$"):
        images_module.check_image(arr, "lab.png", colour=True, labels=True)


def test_the_colour_warning_points_at_the_line_that_loads_the_file(tmp_path):
    """The DataWarning of a colour image is reported at the caller of load_stack (this test
    file, this line), not inside tinyunet nor further up the stack."""
    import imagecodecs
    rgba = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgba))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = __import__("inspect").currentframe().f_lineno + 1
        load_stack(tmp_path / "a.png")
    [w] = [w for w in caught if issubclass(w.category, DataWarning)]
    assert "a colour image (RGBA)" in str(w.message)
    assert (w.filename, w.lineno) == (__file__, line)


@pytest.mark.parametrize("suffix, encode, decoder", [
    (".png", "jpeg8_encode", "PNG_DECODE: not a PNG image"),
    (".PNG", "jpeg8_encode", "PNG_DECODE: not a PNG image"),
    (".jpeg", "png_encode", "JPEG8_DECODE: Not a JPEG file"),
    (".jpg", "png_encode", "JPEG8_DECODE: Not a JPEG file")])
def test_a_file_is_decoded_as_the_format_its_suffix_names(tmp_path, suffix, encode, decoder):
    """The suffix names the format (.png: PNG, .jpg / .jpeg: JPEG, in any case): a JPEG named
    .png, or a PNG named .jpeg, is refused with the decoder's reason and the valid formats, not
    guessed at from its bytes."""
    import imagecodecs
    ramp = (np.add.outer(np.arange(8), np.arange(8)) * 8).astype(np.uint8)
    path = tmp_path / f"a{suffix}"
    path.write_bytes(getattr(imagecodecs, encode)(ramp))
    with pytest.raises(DataError) as e:
        load_stack(path)
    assert str(e.value).startswith(f"{path}: cannot read it as an image (ValueError: {decoder}")
    assert str(e.value).endswith(f"valid formats are {images_module.IMAGE_FORMATS}")


def test_instance_labels_take_whole_floats_and_ids_up_to_the_int32_maximum():
    """Float masks of whole numbers are ids (2.0 -> 2); an id of 2**31 - 1 fits int32 and is
    kept; 2**31 does not, nor is inf (or NaN) a whole number: both refused."""
    inst = images_module.instance_labels
    out = inst(np.array([[0.0, 1.0], [2.0, 2.0]]), "m.tif")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 1], [2, 2]])
    top = np.array([[0, 2 ** 31 - 1]], np.uint32)
    np.testing.assert_array_equal(inst(top, "m.tif"), [[0, 2 ** 31 - 1]])
    with pytest.raises(DataError, match=r"^m\.tif: instance ids up to 2147483648 do not fit int32"):
        inst(top + np.uint32(1), "m.tif")
    for bad in (np.inf, np.nan):
        with pytest.raises(DataError, match=r"^m\.tif: instance labels must be whole numbers"):
            inst(np.array([[0.0, bad]]), "m.tif")


# ---- load_pairs, load_isbi: what their messages name --------------------------------------------

def test_a_pairs_folder_with_no_images_names_the_suffixes(tmp_path):
    """No *image* file: the message names the folder, the pattern and the suffixes read, in
    order."""
    with pytest.raises(DataNotFoundError) as e:
        images_module.load_pairs(tmp_path)
    assert str(e.value) == (f"{tmp_path}: no image files matching '*image*' (ending .jpeg, .jpg, "
                            f".png, .tif, .tiff)")


def test_pairs_of_other_sizes_are_refused_naming_the_folder(tmp_path):
    """Images 8 x 8, labels 8 x 6 (one of each): the folder, then both sizes."""
    tifffile.imwrite(tmp_path / "0_image.tif", np.arange(64, dtype=np.uint8).reshape(8, 8))
    tifffile.imwrite(tmp_path / "0_label.tif", np.full((8, 6), 255, np.uint8))
    with pytest.raises(DataError) as e:
        images_module.load_pairs(tmp_path)
    assert str(e.value) == f"{tmp_path}: images are 8x8 but labels are 8x6"


def test_a_colour_instance_mask_is_refused_as_a_label_image(tmp_path):
    """kind="instances": a mask in colour (RGB) is a label image, refused as one (not averaged to
    grey ids)."""
    import imagecodecs
    tifffile.imwrite(tmp_path / "0_image.tif", np.arange(64, dtype=np.uint8).reshape(8, 8))
    (tmp_path / "0_label.png").write_bytes(imagecodecs.png_encode(np.ones((8, 8, 3), np.uint8)))
    with pytest.raises(DataError, match=r"a colour image \(RGB\) where a label image"):
        images_module.load_pairs(tmp_path, kind="instances")


def test_load_isbi_names_the_files_missing_and_the_challenges(tmp_path):
    """Without train-labels.tif: that file, then the three files of the challenge."""
    from tinyunet.data.isbi import load_isbi
    tifffile.imwrite(tmp_path / "train-volume.tif", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataNotFoundError) as e:
        load_isbi(tmp_path)
    assert str(e.value) == (f"{tmp_path}: missing train-labels.tif (the ISBI 2012 challenge "
                            f"files train-volume.tif, train-labels.tif, test-volume.tif; see "
                            f"the README)")


def test_load_isbi_refuses_labels_of_another_count_naming_the_folder(tmp_path):
    """3 image slices, 2 label slices: the folder, then both counts."""
    from tinyunet.data.isbi import load_isbi
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "train-volume.tif", rng.integers(0, 256, (3, 8, 8), np.uint8),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", np.full((2, 8, 8), 255, np.uint8),
                     photometric="minisblack")
    with pytest.raises(DataError) as e:
        load_isbi(tmp_path)
    assert str(e.value) == f"{tmp_path}: 3 images but 2 label images"


# ---- TileSampler: where the output tile lies ----------------------------------------------------

@pytest.mark.parametrize("width", [5, 8, 11])
def test_the_output_tile_takes_every_place_where_it_fits_and_no_other(width):
    """Output tile O = 8, images 8 high (so the tile's row is 0) and W wide, their weights the
    column number x: with no deformation, flip or grey change, each sample's weights are the
    columns ox .. ox + 7 (mirrored beyond the image), one tile per origin ox. The origins are
    every place where the tile fits: 0 .. W - O for a wider image (W = 11: 4 places), or, for a
    narrower one, every place where the image fits in the tile, -(O - W) .. 0 (W = 5: 4 places);
    W = O: the one place 0. So many draws show exactly max(W - O, O - W) + 1 tiles."""
    out, h = 8, 8
    images = np.zeros((1, h, width), np.float32)
    classes = np.zeros((1, h, width), np.uint8)
    weights = np.broadcast_to(np.arange(width, dtype=np.float32), (1, h, width))
    sampler = TileSampler(images, classes, weights, tile=12, out=out, elastic=False,
                          flips=False, grey=False)
    rng = np.random.default_rng(0)
    tiles = {tuple(sampler.sample(rng)[2][0, 0]) for _ in range(200)}
    assert len(tiles) == abs(width - out) + 1
    if width >= out:          # inside the image: exactly the columns ox .. ox + 7
        assert tiles == {tuple(range(ox, ox + out)) for ox in range(width - out + 1)}
    else:                     # each tile holds the whole image's columns, in order
        assert all(any(t[i:i + width] == tuple(range(width)) for i in range(out - width + 1))
                   for t in tiles)
