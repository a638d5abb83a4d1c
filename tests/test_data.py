"""Data loading: the ISBI files, folders of pairs, the synthetic set, and clear errors."""
import numpy as np
import pytest
import tifffile

from tinyunet.data import (DataError, DataNotFoundError, grey_range, labels_to_classes,
                           load_isbi, load_pairs, load_stack, normalisation, normalise,
                           synthetic_em)
from tinyunet.data.images import check_image
from tinyunet.errors import DataWarning


def write_isbi(folder, images, labels):
    folder.mkdir(exist_ok=True)
    tifffile.imwrite(folder / "train-volume.tif", images, photometric="minisblack")
    tifffile.imwrite(folder / "train-labels.tif", labels, photometric="minisblack")
    return folder


def test_synthetic_set_is_seeded_and_em_like():
    a, la = synthetic_em(n=2, size=96, seed=3)
    b, lb = synthetic_em(n=2, size=96, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == la.dtype == np.uint8 and set(np.unique(la)) == {0, 255}
    assert 0.1 < (la == 0).mean() < 0.4                     # membranes, as in ISBI (~22 %)
    assert a[la == 0].mean() < a[la == 255].mean() - 40     # dark membranes


def test_isbi_round_trip_and_errors(tmp_path):
    images, labels = synthetic_em(n=3, size=32, seed=0)
    imgs, labs, test = load_isbi(write_isbi(tmp_path / "ok", images, labels))
    np.testing.assert_array_equal(imgs, images)
    assert test is None
    np.testing.assert_array_equal(labels_to_classes(labs), labels == 255)
    with pytest.raises(ValueError, match="3 images but 2 label images"):
        load_isbi(write_isbi(tmp_path / "count", images, labels[:2]))
    with pytest.raises(ValueError, match="images are 32x32 but labels are 32x30"):
        load_isbi(write_isbi(tmp_path / "size", images, labels[:, :, :30]))
    bad = labels.copy()
    bad[0, 0, :2] = [128, 7]
    with pytest.raises(ValueError, match=r"0 \(membrane\) and 255.*found also \[7, 128\]"):
        load_isbi(write_isbi(tmp_path / "values", images, bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing train-volume.tif, train-labels.tif"):
        load_isbi(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="no such folder: .*nothing"):
        load_isbi(tmp_path / "nothing")


def test_isbi_shared_data(isbi_dir):
    images, labels, test = load_isbi(isbi_dir)
    assert images.shape == labels.shape == test.shape == (30, 512, 512)


def test_folder_of_pairs(tmp_path):
    import matplotlib.image as mpimg
    images, labels = synthetic_em(n=2, size=32, seed=0)
    for k in range(2):
        mpimg.imsave(tmp_path / f"{k:03d}_image.png", images[k], cmap="gray", vmin=0, vmax=255)
        tifffile.imwrite(tmp_path / f"{k:03d}_label.tif", labels[k])
    imgs, labs = load_pairs(tmp_path)
    assert imgs.shape == labs.shape == (2, 32, 32)
    np.testing.assert_array_equal(labs, labels)
    assert np.abs(imgs.astype(int) - images).max() <= 1
    (tmp_path / "002_image.png").write_bytes((tmp_path / "000_image.png").read_bytes())
    with pytest.raises(ValueError, match="3 image files but 2 label files"):
        load_pairs(tmp_path)


@pytest.mark.parametrize("name, content", [("a.png", b"not a png"), ("a.tif", b"not a tiff"),
                                           ("a.jpg", b"\xff\xd8 broken"), ("a.bmp", b"BM?")])
def test_a_file_that_is_not_an_image_is_named(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{name}: cannot read it as an image .*valid formats "
                                        rf"are TIFF .*PNG or JPEG"):
        load_stack(tmp_path / name)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match="dir.png is a folder, not an image file"):
        load_stack(tmp_path / "dir.png")
    with pytest.raises(DataNotFoundError, match="no such file: .*missing.png"):
        load_stack(tmp_path / "missing.png")


def test_folder_errors_name_the_folder_or_file(tmp_path):
    images, labels = synthetic_em(n=2, size=32, seed=0)
    with pytest.raises(DataNotFoundError, match="no such folder: .*nowhere"):
        load_pairs(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="file.txt is a file, not a folder"):
        load_pairs(tmp_path / "file.txt")
    with pytest.raises(DataNotFoundError, match="no image files matching '\\*image\\*'"):
        load_pairs(tmp_path)
    tifffile.imwrite(tmp_path / "0_image.tif", images[0])
    tifffile.imwrite(tmp_path / "1_image.tif", images[1, :30])
    tifffile.imwrite(tmp_path / "0_label.tif", labels[0])
    tifffile.imwrite(tmp_path / "1_label.tif", labels[1])
    with pytest.raises(DataError, match="1_image.tif is 30x32 but 0_image.tif is 32x32"):
        load_pairs(tmp_path)
    tifffile.imwrite(tmp_path / "1_image.tif", images[1])
    # a binary mask of 0 and 1 (one's own labels, often) reads as 0 and 255, and says so
    tifffile.imwrite(tmp_path / "1_label.tif", (labels[1] > 0).astype(np.uint8))
    with pytest.warns(DataWarning, match=r"1_label.tif: labels 0 and 1, read as 0 \(membrane or "
                                         r"background\) and 1 \(cell interior\), as 0 and 255"):
        _, labs = load_pairs(tmp_path)
    np.testing.assert_array_equal(labs, labels[:2])
    tifffile.imwrite(tmp_path / "1_label.tif", labels[1] // 2)
    with pytest.raises(DataError, match=r"1_label.tif: label values must be 0 .* found also"
                                        r" \[127\]"):
        load_pairs(tmp_path)


@pytest.mark.parametrize("bad", [[np.inf, np.inf], [-np.inf, -np.inf], [np.inf, -np.inf],
                                 [np.nan, np.inf]])
def test_infinite_pixels_are_refused_as_nan_ones_are(tmp_path, bad):
    """+inf and -inf pixels are a DataError that counts them, as NaN pixels are, in an array
    and in a file."""
    img = np.zeros((3, 4), np.float32)
    img[0, 1], img[2, 3] = bad                          # 2 of the 12 pixels
    with pytest.raises(DataError, match=r"^here: 2 of 12 pixels are NaN or infinite: an image "
                                        r"must hold finite grey values"):
        check_image(img, "here")
    tifffile.imwrite(tmp_path / "inf.tif", img)
    with pytest.raises(DataError, match=r"inf\.tif: 2 of 12 pixels are NaN or infinite"):
        load_stack(tmp_path / "inf.tif")


# one brightness in four grey types: the fractions 0, 0.2, 0.8, 1 of the type's range
# (8-bit / 255, 16-bit / 65535, floats / 1: taken as they are)
FRACTIONS = {np.uint8: [0, 51, 204, 255], np.uint16: [0, 13107, 52428, 65535],
             np.float32: [0, 0.2, 0.8, 1], np.float64: [0, 0.2, 0.8, 1]}


@pytest.mark.parametrize("dtype", list(FRACTIONS))
def test_grey_values_are_divided_by_the_types_range_then_normalised(dtype):
    """normalisation is the (mean, std) of x / range and normalise is (x / range - mean) / std,
    float32, where range is 255 for 8-bit, 65535 for 16-bit and 1 for float images."""
    assert grey_range(dtype) == {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    img = np.array(FRACTIONS[dtype], dtype).reshape(1, 2, 2)
    mean, std = normalisation(img)
    # x / range = 0, 0.2, 0.8, 1: mean 0.5, deviations +-0.5, +-0.3, std sqrt((.25 + .09) / 2)
    assert mean == pytest.approx(0.5, abs=1e-7) and std == pytest.approx(0.17 ** 0.5, abs=1e-7)
    x = normalise(img, 0.5, 0.2)                         # (0.2 - 0.5) / 0.2 = -1.5, ...
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [-2.5, -1.5, 1.5, 2.5], rtol=0, atol=1e-6)


def test_float_images_are_taken_as_they_are_not_rescaled_by_their_own_values():
    """A float image is divided by 1, whatever its values: 0, 2, 8, 10 have mean 5 and std
    sqrt(17), and normalise(., 5, 2) gives -2.5, -1.5, 1.5, 2.5."""
    img = np.array([[[0, 2], [8, 10]]], np.float32)
    mean, std = normalisation(img)
    assert mean == pytest.approx(5) and std == pytest.approx(17 ** 0.5)
    np.testing.assert_allclose(normalise(img, 5, 2).ravel(), [-2.5, -1.5, 1.5, 2.5], atol=1e-6)
