"""Export a trained checkpoint for other tools: ONNX, TorchScript, or a BioImage Model Zoo package.

    tinyunet export runs/<run>/best.npz --format onnx --out model.onnx
    tinyunet export runs/<run>/best.npz --format torchscript --out model.pt
    tinyunet export runs/<run>/best.npz --format bioimageio --out my_model/
    tinyunet export runs/<run>/best.npz --format bioimageio --out my_model.zip   # zipped
    tinyunet export isbi2012 --format bioimageio --out isbi2012_zoo/     # the shipped model

A bioimage.io package (format 0.5: rdf.yaml, the weights as ONNX and, where PyTorch is
installed, TorchScript, test tensors made by tinyunet's own forward pass, a README and a cover)
opens in Fiji (deepImageJ), ilastik, napari and QuPath; `bioimageio test my_model/rdf.yaml`
checks it. Every export is checked against tinyunet's own float64 forward pass at several valid
sizes and a batch of 2 before this command reports success. Needs pip install 'tinyunet[export]'.
"""
from pathlib import Path

from .cli import ArgumentParser
from ..errors import UserError

TOLERANCE = 1e-5


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .npz checkpoint (runs/<run>/best.npz), or the name of "
                                       "a model that ships with tinyunet (isbi2012)")
    ap.add_argument("--format", choices=("onnx", "torchscript", "bioimageio"), required=True)
    ap.add_argument("--out", required=True, help="the file (onnx, torchscript) or the folder "
                                                 "(bioimageio; a name ending in .zip: the "
                                                 "package zipped) to write")
    ap.add_argument("--name", help="bioimageio: the model's name (letters, digits, spaces, - _)")
    ap.add_argument("--url", help="bioimageio: where this model or its code is published, "
                                  "cited beside the paper")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap


def main(argv=None):
    from .. import export
    from ..checkpoint import SHIPPED
    args = build_parser().parse_args(argv)
    checkpoint = SHIPPED.get(args.checkpoint, args.checkpoint)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists: choose another --out, or pass --overwrite")
    try:
        out, worst = export.export(checkpoint, args.format, out, args.name, args.url)
    except ImportError as e:
        raise UserError(str(e)) from None
    if worst > TOLERANCE:
        raise UserError(f"{out}: the export differs from tinyunet's forward pass by {worst:.2e} "
                        f"(tolerance {TOLERANCE:g}): please report this")
    what = {"onnx": "ONNX", "torchscript": "TorchScript", "bioimageio": "bioimage.io package"}
    print(f"wrote {what[args.format]} {out}: probabilities within {worst:.1e} of tinyunet's own "
          f"at several valid sizes and a batch of 2")
    if args.format == "bioimageio":
        rdf = out if out.suffix.lower() == ".zip" else out / "rdf.yaml"
        print(f"check it with: bioimageio test {rdf}")
