"""Train a U-Net on ISBI 2012 (or the built-in synthetic EM set) and report the challenge's metrics.

    python examples/train_isbi.py                                   # synthetic data, tiny preset
    python examples/train_isbi.py --data ../shared/data/isbi2012 --preset cpu
    python examples/train_isbi.py --data ../shared/data/isbi2012 --preset paper --device gpu
    python examples/train_isbi.py --resume runs/20261121-180000-cpu     # continue a run

With no arguments it trains a small network on a synthetic EM-like data set for about half a
minute on the CPU and shows the validation metrics before and after. With --data it uses the ISBI files
in that folder (train-volume.tif, train-labels.tif): slices 0-24 for training, 25-29 for
validation. Each run writes a run directory (checkpoints, log, figures); see tinyunet/train.py.
"""
import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout, too

from tinyunet import backend                                     # noqa: E402
from tinyunet.data import load_isbi, load_pairs, synthetic_em    # noqa: E402
from tinyunet.train import PRESETS, TrainConfig, Trainer, model_from_checkpoint  # noqa: E402


def slices(spec, n):
    """'0-24' or '25,27,29' -> indices, checked against n slices."""
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise SystemExit(f"error: slices {bad} do not exist: the data has {n} slices (0-{n - 1})")
    return out


def load_data(args):
    if args.data is None:
        images, labels = synthetic_em(n=12, size=256, seed=args.data_seed)
        return (images[:10], labels[:10]), (images[10:], labels[10:]), "synthetic EM (built in)"
    folder = Path(args.data)
    if (folder / "train-volume.tif").exists():
        images, labels, _ = load_isbi(folder)
        name = f"ISBI 2012 ({folder})"
    else:
        images, labels = load_pairs(folder)
        name = f"image/label pairs ({folder})"
    tr, va = slices(args.train_slices, len(images)), slices(args.val_slices, len(images))
    return (images[tr], labels[tr]), (images[va], labels[va]), name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--data", help="folder with the ISBI files or image/label pairs "
                                   "(default: the built-in synthetic set)")
    ap.add_argument("--preset", choices=list(PRESETS), default=None,
                    help="network and tile size: paper (base 64, 572), cpu (base 16, 380), "
                         "tiny (base 8, depth 3, 148; the default without --data)")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    ap.add_argument("--steps", type=int, help="total training steps")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--optimizer", choices=["sgd", "adam"])
    ap.add_argument("--weighting", choices=["paper", "balanced", "none"],
                    help="loss weights: the paper's weight map (default), class-balanced, none")
    ap.add_argument("--no-elastic", action="store_true", help="no elastic deformation")
    ap.add_argument("--val-every", type=int)
    ap.add_argument("--val-tta", action="store_true", help="validate with 8-fold TTA")
    ap.add_argument("--device", default=None, help="cpu or gpu (default: $TINYUNET_DEVICE or cpu)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--train-slices", default="0-24")
    ap.add_argument("--val-slices", default="25-29")
    ap.add_argument("--data-seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="runs", help="parent folder of new run directories")
    args = ap.parse_args(argv)

    train, val, name = load_data(args)
    overrides = {k: v for k, v in dict(steps=args.steps, lr=args.lr, optimizer=args.optimizer,
                                        weighting=args.weighting, val_every=args.val_every,
                                        seed=args.seed).items() if v is not None}
    if args.no_elastic:
        overrides["elastic"] = False
    if args.val_tta:
        overrides["val_tta"] = True
    device = backend.resolve_device(args.device)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").exists():
            raise SystemExit(f"error: {run_dir} is not a run directory (no config.json)")
        saved = json.loads((run_dir / "config.json").read_text())
        if args.preset and args.preset != saved["preset"]:
            raise SystemExit(f"error: --preset {args.preset} does not match the run's preset "
                             f"{saved['preset']!r}")
        cfg = TrainConfig(**{**saved, **overrides, "device": device})
    else:
        preset = args.preset or ("tiny" if args.data is None else "cpu")
        cfg = TrainConfig.from_preset(preset, device=device, **overrides)
        run_dir = Path(args.out) / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset}"
    print(f"data: {name}: {len(train[0])} training and {len(val[0])} validation slices "
          f"of {train[0].shape[1]}x{train[0].shape[2]}")
    print(f"run directory: {run_dir}")
    trainer = Trainer(cfg, train, val, run_dir, resume=bool(args.resume))
    print(f"model: base {cfg.base_channels}, depth {cfg.depth}, "
          f"{trainer.model.num_parameters():,} parameters, tile {cfg.tile} -> {trainer.out}, "
          f"{cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps, weighting {cfg.weighting}, {device}")
    if trainer.step == 0:
        before = trainer.validate()
        print("before training: " + fmt(before))
        trainer.log(dict(step=0, val=before))
    try:
        trainer.run()
    except KeyboardInterrupt as e:
        raise SystemExit(f"\ninterrupted: {e}")
    # final report: the best checkpoint, with and without test-time augmentation
    best, meta = model_from_checkpoint(run_dir / "best.npz", device)
    trainer.model = best
    final = {"step": meta["step"], "plain": trainer.validate(tta=False),
             "tta": trainer.validate(tta=True)}
    (run_dir / "final_metrics.json").write_text(json.dumps(final, indent=1))
    print(f"best checkpoint (step {meta['step']}): {fmt(final['plain'])}")
    print(f"  with 8-fold test-time augmentation: {fmt(final['tta'])}")
    print(f"run directory: {run_dir} (checkpoints, log.jsonl, curves.png, predictions.png)")
    return final


def fmt(m):
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())


if __name__ == "__main__":
    main()
