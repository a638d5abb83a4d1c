"""A trained model for the tools biologists use: ONNX, TorchScript, and a BioImage Model Zoo
package (bioimage.io, format 0.5) that Fiji (deepImageJ), ilastik, napari and QuPath open.

    to_onnx(model, "model.onnx")              the network built node by node with the onnx package
    to_torchscript(model, "model.pt")         through the PyTorch copy of the network (torch_unet)
    to_bioimageio(checkpoint, "folder")       rdf.yaml, both weights, test tensors, a README

Every export outputs the class probabilities (N, K, H', W') of the network on an input already
normalised as tinyunet normalises it; the bioimage.io package describes that normalisation as its
preprocessing, so a tool feeds it raw 8- or 16-bit images. Valid convolutions: the output is the
input minus the network's margin on each side (92 px for depth 4), and an input size must be a
valid tile size (model.valid_input_sizes: 188, 204, ... for depth 4, steps of 2^depth).

Needs the optional packages: pip install 'tinyunet[export]' (onnx, onnxruntime, torch for
TorchScript, bioimageio.core for the package and its test).
"""
import json
from pathlib import Path

import numpy as np

from . import backend
from .checkpoint import trained_on
from .data.images import grey_range
from .instances import recipe
from .model import check_input_size, crop_margins, margin, valid_input_sizes

INSTALL = "pip install 'tinyunet[export]'"
OPSET, IR_VERSION = 17, 8
PAPER = ("Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for Biomedical "
         "Image Segmentation. MICCAI 2015, LNCS 9351, 234-241")
PAPER_DOI = "10.1007/978-3-319-24574-4_28"


def _need(module):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"exporting needs {module}: {INSTALL}") from None


def _weights(model):
    return {k: backend.to_numpy(v).astype(np.float32) for k, v in model.state_dict().items()}


# ---- ONNX -----------------------------------------------------------------------------------
def onnx_model(model):
    """The network as an onnx ModelProto: Conv, Relu, MaxPool, ConvTranspose, constant Slices
    for the centre crops, Concat, and Softmax over the classes; batch, height and width are
    dynamic; no dropout (evaluation mode). Opset 17, IR version 8."""
    onnx = _need("onnx")
    from onnx import TensorProto, helper, numpy_helper
    w = _weights(model)
    nodes, inits = [], [numpy_helper.from_array(v, k) for k, v in w.items()]

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv_relu(layer, x):
        y = node("Conv", [x, f"{layer}.weight", f"{layer}.bias"], f"{layer}", kernel_shape=[3, 3])
        return node("Relu", [y], f"{layer}.relu")

    def const(name, values):
        inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    depth, crops = model.depth, crop_margins(model.depth)
    h, skips = "input", []
    for i in range(depth):
        h = conv_relu(f"down{i}.conv2", conv_relu(f"down{i}.conv1", h))
        skips.append(h)
        h = node("MaxPool", [h], f"down{i}.pool", kernel_shape=[2, 2], strides=[2, 2])
    h = conv_relu("bottom.conv2", conv_relu("bottom.conv1", h))
    axes = const("crop.axes", [2, 3])
    for i in reversed(range(depth)):
        up = node("ConvTranspose", [h, f"up{i}.upconv.weight", f"up{i}.upconv.bias"],
                  f"up{i}.upconv", kernel_shape=[2, 2], strides=[2, 2])
        c = crops[i]
        crop = node("Slice", [skips[i], const(f"up{i}.crop.starts", [c, c]),
                              const(f"up{i}.crop.ends", [-c, -c]), axes], f"up{i}.crop")
        h = node("Concat", [crop, up], f"up{i}.concat", axis=1)
        h = conv_relu(f"up{i}.conv2", conv_relu(f"up{i}.conv1", h))
    logits = node("Conv", [h, "out.weight", "out.bias"], "out", kernel_shape=[1, 1])
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=1))
    cfg = model.config
    graph = helper.make_graph(
        nodes, "tinyunet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", cfg["in_channels"], "height", "width"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["batch", cfg["n_classes"], "out_height", "out_width"])],
        inits)
    proto = helper.make_model(graph, producer_name="tinyunet",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto)
    return proto


def to_onnx(model, path):
    """Write the network as ONNX to `path` (see onnx_model); returns the path."""
    onnx = _need("onnx")
    onnx.save(onnx_model(model), str(path))
    return Path(path)


# ---- TorchScript ----------------------------------------------------------------------------
def torch_module(model):
    """The PyTorch copy of the network (torch_unet.TorchUNet) with the model's weights, with the
    softmax, in evaluation mode."""
    torch = _need("torch")
    from .torch_unet import TorchUNet
    cfg = model.config
    net = TorchUNet(cfg["in_channels"], cfg["n_classes"], cfg["base_channels"], cfg["depth"],
                    softmax=True)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in _weights(model).items()})
    return net.eval()


def to_torchscript(model, path):
    """Write the network as TorchScript to `path` (traced on the smallest valid tile; the
    centre crops are constant slices, so it serves every valid size); returns the path."""
    torch = _need("torch")
    size = valid_input_sizes(model.depth)[0]
    example = torch.zeros(1, model.config["in_channels"], size, size)
    with torch.no_grad():
        traced = torch.jit.trace(torch_module(model), example, check_trace=False)
    traced.save(str(path))
    return Path(path)


# ---- the check: the exports against tinyunet's own float64 forward ----------------------------
def reference_probabilities(model, x):
    """tinyunet's own probabilities in float64 (the model's weights, upcast)."""
    from .model import UNet
    ref = UNet(**{**model.config, "dtype": "float64"}, engine="readable", device="cpu")
    ref.load_state_dict({k: backend.to_numpy(v) for k, v in model.state_dict().items()})
    return ref.predict_proba(np.asarray(x, np.float64))


def check_export(model, run, sizes=None, batch=2, seed=0):
    """The largest absolute difference of run(x) (an export, float32) from tinyunet's float64
    probabilities, over random inputs of several valid sizes (and non-square ones) and a batch
    of `batch`."""
    rng = np.random.default_rng(seed)
    sizes = sizes or valid_input_sizes(model.depth)[:3]
    worst = 0.0
    for h, w in [(s, s) for s in sizes] + [(sizes[0], sizes[-1])]:
        x = rng.standard_normal((batch, model.config["in_channels"], h, w)).astype(np.float32)
        worst = max(worst, float(np.abs(run(x) - reference_probabilities(model, x)).max()))
    return worst


def onnx_runner(path):
    ort = _need("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def torchscript_runner(path):
    torch = _need("torch")
    net = torch.jit.load(str(path))
    return lambda x: net(torch.from_numpy(x)).detach().numpy()


def export(checkpoint, fmt, out, name=None, url=None):
    """Export a checkpoint as `fmt` ("onnx", "torchscript" or "bioimageio": the package with
    ONNX weights, and TorchScript ones where PyTorch is installed) to `out`, and check every
    weight file written against tinyunet's own float64 forward (check_export). A bioimageio
    `out` ending in .zip is the package zipped, as the model zoo distributes them (rdf.yaml at
    the zip's root), else a folder. Returns (out, the largest difference found)."""
    import importlib.util

    from .checkpoint import model_from_checkpoint
    model, meta = model_from_checkpoint(checkpoint, "cpu")
    out = Path(out)
    if fmt == "onnx":
        return to_onnx(model, out), check_export(model, onnx_runner(out))
    if fmt == "torchscript":
        return to_torchscript(model, out), check_export(model, torchscript_runner(out))
    if fmt != "bioimageio":
        raise ValueError(f"unknown format {fmt!r}: valid formats are onnx, torchscript and "
                         f"bioimageio")
    formats = ["onnx"] + (["torchscript"] if importlib.util.find_spec("torch") else [])
    if out.suffix.lower() == ".zip":
        import tempfile
        out.parent.mkdir(parents=True, exist_ok=True)          # as the folder form makes its own
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            folder, worst = export(checkpoint, fmt, Path(tmp) / "package", name, url)
            _zip(folder, out)
        return out, worst
    to_bioimageio(checkpoint, out, name=name, url=url, formats=formats, model=model, meta=meta,
                  scores=validation_scores(checkpoint, meta))
    runners = {"onnx": onnx_runner, "torchscript": torchscript_runner}
    files = {"onnx": "model.onnx", "torchscript": "model.pt"}
    return out, max(check_export(model, runners[f](out / files[f])) for f in formats)


def _zip(folder, out):
    """The files of `folder` into the zip file `out` (at its root), written atomically."""
    import zipfile

    from .files import atomic_write

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(folder.iterdir()):
                z.write(path, path.name)
    atomic_write(out, write)


def validation_scores(checkpoint, meta):
    """What a checkpoint scored on its run's validation data, for a package's README: a shipped
    model's provenance, else the run's final_metrics.json beside it (best.npz: the best
    checkpoint's scores, latest.npz: the last one's); None where neither says."""
    prov = meta.get("provenance") or {}
    if "scores_last" in prov:
        return {"checkpoint": prov.get("shipped"), "scored_on": prov.get("scored_on"),
                **prov["scores_last"]}
    try:
        final = json.loads((Path(checkpoint).parent / "final_metrics.json").read_text())
    except (OSError, ValueError):
        return None
    mine = final.get("last", {}) if Path(checkpoint).stem == "latest" else final
    if "plain" not in mine:
        return None
    return {"checkpoint": Path(checkpoint).name, "step": mine.get("step"),
            "plain": mine["plain"], "tta": mine.get("tta")}


# ---- bioimage.io ----------------------------------------------------------------------------
def rdf(meta, name, description, tile, files, offset=None, authors=None, training_data=None,
        scores=None, url=None):
    """The bioimage.io model description (format 0.5) of a checkpoint, as a dict for rdf.yaml.

    files: {"onnx", "torchscript", "test_input", "test_output", "readme", "cover"} -> file
    name (those present); offset: the output's size relative to the input (default: minus
    twice the network's margin)."""
    cfg = meta["model"]
    depth = cfg["depth"]
    sizes = valid_input_sizes(depth)
    grow = -2 * margin(sizes[0], depth) if offset is None else offset
    scale = 1.0 / grey_range(meta.get("image_dtype", "uint8"))
    gain, shift = scale / meta["std"], -meta["mean"] / meta["std"]

    def axes(tensor, out=False):
        space = [dict(type="space", id=a,
                      size=(dict(tensor_id="raw", axis_id=a, offset=grow) if out
                            else dict(min=sizes[0], step=sizes[1] - sizes[0])))
                 for a in ("y", "x")]
        channels = ([f"class{k}" for k in range(cfg["n_classes"])] if out else
                    [f"channel{k}" for k in range(cfg["in_channels"])])
        if out and cfg["n_classes"] == 2:
            channels = ["background", "cell"]
        return [dict(type="batch"), dict(type="channel", channel_names=channels)] + space

    weights = {}
    if "onnx" in files:
        weights["onnx"] = dict(source=files["onnx"], opset_version=OPSET)
    if "torchscript" in files:
        import torch
        weights["torchscript"] = dict(source=files["torchscript"],
                                      pytorch_version=torch.__version__.split("+")[0])
        if "onnx" in weights:        # both are made from the checkpoint; the spec wants one root
            weights["torchscript"]["parent"] = "onnx"
    doc = dict(
        format_version="0.5.4", type="model", name=name, description=description,
        authors=authors or [dict(name="tinyunet")],
        cite=[dict(text=PAPER, doi=PAPER_DOI)] + (
            [dict(text="tinyunet: the U-Net with every layer written by hand, on NumPy and "
                       "CuPy", url=url)] if url else []),
        license="MIT", documentation=files["readme"],
        tags=["unet", "segmentation", "2d", "tinyunet"],
        inputs=[dict(id="raw", axes=axes("raw"),
                     test_tensor=dict(source=files["test_input"]),
                     sample_tensor=dict(source=files["sample_input"]),
                     preprocessing=[dict(id="ensure_dtype", kwargs=dict(dtype="float32")),
                                    dict(id="scale_linear", kwargs=dict(gain=gain,
                                                                         offset=shift)),
                                    dict(id="ensure_dtype", kwargs=dict(dtype="float32"))])],
        outputs=[dict(id="probabilities", axes=axes("probabilities", out=True),
                      test_tensor=dict(source=files["test_output"]),
                      sample_tensor=dict(source=files["sample_output"]))],
        weights=weights, timestamp=meta.get("timestamp", "2026-12-01T00:00:00"),
        config=dict(tinyunet=dict(model=cfg, tile=tile, mean=meta["mean"], std=meta["std"],
                                  step=meta.get("step"), scores=scores)))
    cells = recipe(meta)
    if cells:                      # the network gives P(cell); how tinyunet makes cells of it
        doc["config"]["tinyunet"]["instances"] = cells
    if "cover" in files:
        doc["covers"] = [files["cover"]]
    if training_data:
        doc["training_data"] = training_data
    return doc


def to_bioimageio(checkpoint, out, name=None, description=None, test_image=None,
                  formats=("onnx", "torchscript"), offset=None, scores=None, url=None,
                  training_data=None, model=None, meta=None):
    """Write a bioimage.io package (a folder) for a checkpoint: rdf.yaml, the weights in
    `formats`, test tensors (input: raw grey values, output: tinyunet's own probabilities of
    them), a README and a cover; returns the folder. test_image: a 2-D uint8 image to make the
    test tensors from (default: a synthetic EM image); model, meta: the checkpoint's, where the
    caller has loaded them already."""
    yaml = _need("yaml")
    from .checkpoint import model_from_checkpoint
    from .data import grey_range, normalise, synthetic_em
    if model is None or meta is None:
        model, meta = model_from_checkpoint(checkpoint, "cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tile = valid_input_sizes(model.depth)[1]
    if test_image is None:                 # a synthetic EM image in the model's type of grey values
        test_image = synthetic_em(n=1, size=tile, seed=3)[0][0] / 255.0
        dtype = np.dtype(meta.get("image_dtype", "uint8"))
        test_image = (np.round(test_image * grey_range(dtype)) if dtype.kind in "ui"
                      else test_image).astype(dtype)
    image = np.asarray(test_image)[:tile, :tile]
    check_input_size(image.shape[0], model.depth, "the test image's height")
    check_input_size(image.shape[1], model.depth, "the test image's width")
    raw = image[None, None].astype(np.float32)                      # (1, 1, H, W)
    expected = reference_probabilities(model, normalise(image, meta["mean"], meta["std"])[None, None])
    np.save(out / "test_input.npy", raw)
    np.save(out / "test_output.npy", expected.astype(np.float32))
    import tifffile
    tifffile.imwrite(out / "sample_input.tif", image)                # for people to look at
    tifffile.imwrite(out / "sample_output.tif", expected[0].astype(np.float32))
    files = dict(test_input="test_input.npy", test_output="test_output.npy", readme="README.md",
                 cover="cover.png", sample_input="sample_input.tif",
                 sample_output="sample_output.tif")
    if "onnx" in formats:
        to_onnx(model, out / "model.onnx")
        files["onnx"] = "model.onnx"
    if "torchscript" in formats:
        to_torchscript(model, out / "model.pt")
        files["torchscript"] = "model.pt"
    _cover(image, expected[0, -1], out / "cover.png")
    name = name or f"tinyunet U-Net base {model.config['base_channels']} depth {model.depth}"
    description = description or ("A U-Net (Ronneberger et al. 2015) trained with tinyunet: "
                                  "P(cell) per pixel, valid convolutions.")
    (out / "README.md").write_text(_readme(name, description, meta, model, scores))
    doc = rdf(meta, name, description, tile, files, offset, scores=scores, url=url,
              training_data=training_data or known_training_data(meta))
    (out / "rdf.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


# the public data sets tinyunet's commands read, described for a package's training_data
DATASETS = {
    "isbi2012": dict(name="ISBI 2012 EM segmentation challenge", description=(
        "Serial section transmission electron microscopy of the Drosophila first instar larva "
        "ventral nerve cord: 30 training slices of 512x512 px with membrane labels"),
        cite=[dict(text="Arganda-Carreras et al. Crowdsourcing the creation of image "
                        "segmentation algorithms for connectomics. Front. Neuroanat. 2015",
                   doi="10.3389/fnana.2015.00142")]),
    "ctc": dict(name="Cell Tracking Challenge", description=(
        "2-D time-lapse microscopy of cells with reference segmentations of some frames"),
        cite=[dict(text="Ulman et al. An objective comparison of cell-tracking algorithms. "
                        "Nature Methods 14, 2017", doi="10.1038/nmeth.4473"),
              dict(text="Maska et al. A benchmark for comparison of cell tracking algorithms. "
                        "Bioinformatics 30(11), 2014", doi="10.1093/bioinformatics/btu080")]),
}


def known_training_data(meta):
    """A bioimage.io dataset description of the checkpoint's training data, where it is one of
    the public sets the README names (ISBI 2012, the cell tracking challenge), else None."""
    source = str(trained_on(meta) or "")
    for key in DATASETS:
        if key in source.lower().replace("-", ""):
            d = DATASETS[key]
            return dict(type="dataset", format_version="0.3.0", name=d["name"],
                        description=d["description"], cite=d["cite"],
                        authors=[dict(name="the challenge's organisers")])
    return None


def _cover(image, prob, path):
    from .plots import plot_overlay
    m = (image.shape[0] - prob.shape[0]) // 2
    plot_overlay(image[m:m + prob.shape[0], m:m + prob.shape[1]], prob, path)


def _readme(name, description, meta, model, scores):
    cfg, train = model.config, meta.get("train_config") or {}
    lines = [f"# {name}", "", description, "",
             "## What it computes", "",
             f"Input: one grey channel, any size of the form {valid_input_sizes(model.depth)[0]}"
             f" + {2 ** model.depth} n px (valid tile sizes); output: P(class) per pixel for "
             f"{cfg['n_classes']} classes{' (background, cell)' if cfg['n_classes'] == 2 else ''}"
             f", {2 * margin(valid_input_sizes(model.depth)[0], model.depth)} px smaller than "
             f"the input (valid convolutions: no padding). Preprocessing: grey values / "
             f"{grey_range(meta.get('image_dtype', 'uint8')):g} ({meta.get('image_dtype', 'uint8')}"
             f"), minus {meta['mean']:.6f}, divided by {meta['std']:.6f} (the training "
             f"images' mean and standard deviation).", "",
             "## Training", "",
             f"Trained with tinyunet: {train.get('steps')} steps of {train.get('optimizer')} "
             f"on tiles of {train.get('tile')} px, the weighted cross-entropy of the paper "
             f"(weighting {train.get('weighting')}), elastic deformation, data "
             f"{(train.get('data') or {}).get('source')}.", ""]
    cells = recipe(meta)
    if cells:
        lines += ["## From probabilities to cells", "",
                  f"The network gives P(cell) per pixel; the cells (`tinyunet predict --model ... "
                  f"--instances`, tinyunet.instances.label_cells) are the "
                  f"{cells['connectivity']}-connected components of P(cell) > "
                  f"{cells['threshold']:g}, those smaller than {cells['min_cell']} px dropped, "
                  f"then the separation border given back: a background pixel within "
                  f"{cells['border']} px of two cells goes to the nearer one (the outer "
                  f"boundary of a cell does not move). In Fiji or napari: threshold the cell "
                  f"channel at {cells['threshold']:g}, label the connected components "
                  f"(4-connected), remove those under {cells['min_cell']} px, and expand the "
                  f"labels by {cells['border']} px where two cells meet. The same settings are "
                  f"in rdf.yaml (config: tinyunet: instances).", ""]
    lines += ["## Validation", "",
              "The test tensors are tinyunet's own float64 forward pass of the test input; the "
              "exported weights (ONNX, TorchScript) reproduce it to about 1e-6 "
              "(`bioimageio test` checks them against it)."]
    if scores:
        lines += ["Scores of the model on its validation data (tinyunet's protocol):", "",
                  "```", json.dumps(scores, indent=1), "```"]
    lines.append("")
    lines += ["## Cite", "", PAPER + f" (doi:{PAPER_DOI}).", ""]
    return "\n".join(lines)
