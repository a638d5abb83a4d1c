"""Score a probability stack against ground-truth labels with the ISBI 2012 challenge's metrics,
or predicted cells against reference masks with the cell tracking challenge's SEG.

    python examples/evaluate.py predictions/volume_prob.tif ../shared/data/isbi2012/train-labels.tif --slices 25-29
    python examples/evaluate.py probs_folder/ labels.tif --json
    python examples/evaluate.py --seg predictions/ ../shared/data/ctc/DIC-C2DH-HeLa/01_GT/SEG

With --seg, PROBS is the predicted cells (label images, one id per cell: predict.py
--instances writes them) and LABELS the reference masks: a folder of them (the challenge's
man_segTTT.tif) or a label stack. Frames are matched by the number in their names (t002_labels
and man_seg002); predicted frames without a reference are not scored. Prints each frame's SEG,
cells, merged and split cells, and the whole set's SEG (the mean over every reference cell),
detection F1 and AP at IoU 0.5 (tinyunet.metrics.seg).

PROBS: a TIFF stack (N, H, W) of P(cell) in [0, 1], as examples/predict.py writes it (1 = cell
interior, 0 = membrane; an 8-bit stack is read as value / 255), or a folder of such images
(sorted by name). LABELS: a label stack, 0 = membrane and 255 (or 1) = cell. --slices picks label
slices (0-based, e.g. 25-29 or 3,7); PROBS holds either those slices or as many as LABELS.

Prints, per slice and for the stack: pixel error, Rand error and warping error (the paper's
table, lower is better) and V_rand and V_info after border thinning (the challenge's final
ranking, higher is better); see tinyunet/metrics/ and docs/11-metrics.md.
"""
import json
import sys
from pathlib import Path

import numpy as np

from .. import metrics
from .cli import ArgumentParser
from ..errors import UserError
from ..data import DataError, load_folder, load_stack, validate_labels
from ..data.selection import parse_slices

COLUMNS = [("pixel_error", "pixel err"), ("rand_error", "Rand err"),
           ("warping_error", "warping err"), ("v_rand", "V_rand"), ("v_info", "V_info")]


def build_parser():
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("probs", help="P(cell) stack: a TIFF (from examples/predict.py) or a folder")
    ap.add_argument("labels", help="label stack: 0 = membrane, 255 (or 1) = cell")
    ap.add_argument("--slices", help="label slices to score, 0-based: 25-29 or 3,7,9")
    ap.add_argument("--invert", action="store_true", help="PROBS is P(membrane): use 1 - p")
    ap.add_argument("--seg", action="store_true", help="PROBS are predicted cells and LABELS "
                    "reference masks: the cell tracking challenge's SEG")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    return ap


def read_stack(path, what):
    """(N, H, W) from a file or a folder of images; a UserError names PROBS or LABELS."""
    path = Path(path)
    try:
        # probabilities and labels alike: no colours, and a constant one is no news
        return load_folder(path, labels=True) if path.is_dir() else load_stack(path, labels=True)
    except DataError as e:
        raise UserError(f"{what}: {e}") from None


def as_probabilities(stack, path):
    """float64 P(cell) in [0, 1]; 8-bit stacks are scaled by 1/255."""
    if stack.dtype == np.uint8:
        return stack / 255.0
    if stack.dtype.kind not in "fiu":
        raise UserError(f"PROBS {path}: pixel type {stack.dtype} is not a number")
    p = stack.astype(np.float64)
    lo, hi = float(np.nanmin(p)), float(np.nanmax(p))
    if np.isnan(p).any() or lo < 0 or hi > 1:
        raise UserError(f"PROBS {path}: values must be probabilities in [0, 1] (P(cell)); found "
                        f"{'NaN, ' if np.isnan(p).any() else ''}min {lo:g}, max {hi:g}")
    return p


def looks_inverted(probs, truths):
    """(inverted?, mean P on cells, mean P on membranes)."""
    on_cell = float(probs[truths].mean()) if truths.any() else 0.5
    on_membrane = float(probs[~truths].mean()) if (~truths).any() else 0.5
    return on_membrane > on_cell, on_cell, on_membrane


def table(res, names):
    head = f"{'slice':>7s} " + " ".join(f"{t:>11s}" for _, t in COLUMNS) + \
        f" {'splits':>7s} {'mergers':>7s}"
    rows = [head]
    for name, m in zip(names, res["per_slice"]):
        rows.append(f"{name:>7s} " + " ".join(f"{m[k]:11.6f}" for k, _ in COLUMNS) +
                    f" {m['split']:7d} {m['merge']:7d}")
    c = res["warping_counts"]
    rows.append(f"{'stack':>7s} " + " ".join(f"{res[k]:11.6f}" for k, _ in COLUMNS) +
                f" {c['split']:7d} {c['merge']:7d}")
    rows.append(f"{'t':>7s} " + " ".join(f"{res['thresholds'][k]:11.1f}" for k, _ in COLUMNS))
    return "\n".join(rows)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.seg:
        return main_seg(args)
    probs = as_probabilities(read_stack(args.probs, "PROBS"), args.probs)
    labels = read_stack(args.labels, "LABELS")
    idx = (parse_slices(args.slices, len(labels), "--slices") if args.slices
           else list(range(len(labels))))
    if len(probs) == len(labels) and len(idx) != len(labels):
        probs = probs[idx]                          # a full stack: take the same slices
    if len(probs) != len(idx):
        raise UserError(f"PROBS has {len(probs)} slices but {len(idx)} label slices are scored "
                        f"(LABELS has {len(labels)}{', --slices ' + args.slices if args.slices else ''}"
                        f"); PROBS must hold those slices or as many as LABELS")
    truths = validate_labels(labels[idx], f"LABELS {args.labels}", cell=(255, 1)) > 0
    if probs.shape[1:] != truths.shape[1:]:
        raise UserError(f"PROBS slices are {probs.shape[1]}x{probs.shape[2]} but LABELS slices are "
                        f"{truths.shape[1]}x{truths.shape[2]}")
    if args.invert:
        probs = 1.0 - probs
    inverted, on_cell, on_membrane = looks_inverted(probs, truths)
    if inverted:
        print(f"warning: PROBS looks inverted: its mean is {on_membrane:.2f} on membranes and "
              f"{on_cell:.2f} in cells, but ISBI probabilities are P(cell) (1 = cell interior, "
              f"0 = membrane); if it is P(membrane), rerun with --invert", file=sys.stderr)
    res = metrics.evaluate(probs, truths)
    if args.json:
        print(json.dumps(dict(res, slices=idx, probs=str(args.probs), labels=str(args.labels)),
                         indent=1))
        return res
    print(table(res, [str(i) for i in idx]))
    print("lower is better: pixel, Rand and warping error (the paper's table: 0.0611, 0.0382, "
          "0.000353);\nhigher is better: V_rand and V_info (thinned borders; the challenge's "
          "ranking).\nstack: the challenge's score of the whole stack, one threshold t per "
          "metric; per-slice\nrows use that t; splits and mergers are pixels at the warping "
          "error's t.")
    return res


def frame_numbers(paths, what):
    """{frame number: path} from the last number in each file name (t002_labels.tif: 2)."""
    import re
    out = {}
    for p in paths:
        found = re.findall(r"\d+", Path(p).name)
        if not found:
            raise UserError(f"{what} {p}: no frame number in the name (e.g. t002_labels.tif, "
                            f"man_seg002.tif)")
        t = int(found[-1])
        if t in out:
            raise UserError(f"{what}: {Path(out[t]).name} and {Path(p).name} both name frame {t}: "
                            f"keep one label image per frame in the folder")
        out[t] = p
    return out


def read_labels(path, what):
    """{frame number: (H, W) labels} of a folder of label images, or of a stack's slices."""
    from ..data.images import image_files, instance_labels
    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise UserError(f"{what} {path}: the folder holds no label images")
        frames = {t: read_stack(p, what) for t, p in frame_numbers(files, what).items()}
    else:
        stack = read_stack(path, what)
        frames = {t: stack[t:t + 1] for t in range(len(stack))}
    out = {}
    for t, stack in frames.items():
        if len(stack) != 1:
            raise UserError(f"{what} frame {t}: a stack of {len(stack)} where one label image is "
                            f"expected")
        try:
            out[t] = instance_labels(stack[0], f"{what} frame {t}")
        except DataError as e:
            raise UserError(str(e)) from None
    return out


def main_seg(args):
    """Predicted cells against reference masks: SEG, F1 and AP at IoU 0.5, per frame and all."""
    pred = read_labels(args.probs, "PROBS")
    ref = read_labels(args.labels, "LABELS")
    missing = sorted(set(ref) - set(pred))
    if missing:
        raise UserError(f"PROBS has no prediction for the reference frames {missing[:10]} "
                        f"(found frames {sorted(pred)[:10]}{' ...' if len(pred) > 10 else ''})")
    frames = sorted(ref)
    for t in frames:
        if pred[t].shape != ref[t].shape:
            raise UserError(f"frame {t}: the prediction is {pred[t].shape[0]}x{pred[t].shape[1]} "
                            f"but the reference is {ref[t].shape[0]}x{ref[t].shape[1]}")
    per = [metrics.seg(pred[t], ref[t]) for t in frames]
    ms = metrics.merged_and_split_cells([pred[t] for t in frames], [ref[t] for t in frames])
    total = metrics.seg([pred[t] for t in frames], [ref[t] for t in frames])
    result = dict(seg=total["seg"], f1=total["f1"], ap50=total["ap50"],
                  frames=[dict(frame=t, seg=r["seg"], reference=r["reference"],
                               predicted=r["predicted"], merged=m["merges"], split=m["splits"])
                          for t, r, m in zip(frames, per, ms)])
    if args.json:
        print(json.dumps(dict(result, probs=str(args.probs), labels=str(args.labels)), indent=1))
        return result
    print(f"{'frame':>6s} {'SEG':>7s} {'cells':>6s} {'found':>6s} {'merged':>7s} {'split':>6s}")
    for f in result["frames"]:
        print(f"{f['frame']:6d} {f['seg']:7.4f} {f['reference']:6d} {f['predicted']:6d} "
              f"{f['merged']:7d} {f['split']:6d}")
    print(f"{'all':>6s} {result['seg']:7.4f}   SEG: mean Jaccard index of every reference cell "
          f"(0 when unmatched); F1 {result['f1']:.4f}, AP50 {result['ap50']:.4f} at IoU 0.5")
    return result
