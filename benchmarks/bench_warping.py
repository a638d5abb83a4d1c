"""The warping error of one 512x512 ISBI slice: tinyunet's Numba kernels against the slow
reference of tests/reference.py (pass by pass, plain Python), on realistic corrupted
predictions of the ground truth, after a warm-up (Numba compile time not counted).

    python benchmarks/bench_warping.py [--data ../shared/data/isbi2012] [--slices 2] [--no-ref]

Also times border thinning (for V_rand / V_info) and a whole `metrics.evaluate` of the slices
(10 + 11 thresholds each). The reference takes tens of seconds per slice; --no-ref skips it.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinyunet.kernels.thinning import thin_borders                     # noqa: E402
from tests import reference as ref                            # noqa: E402
from tests.test_warping import corruptions                    # noqa: E402
from tinyunet import metrics                                  # noqa: E402


def timed(f, *args):
    t0 = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--slices", type=int, default=2, help="label slices to use (from 25 on)")
    ap.add_argument("--no-ref", action="store_true", help="skip the slow reference")
    a = ap.parse_args()
    labels = tifffile.imread(Path(a.data) / "train-labels.tif")[25:25 + a.slices] > 0
    rng = np.random.default_rng(0)
    metrics.warping_error(labels[0][:64, :64].astype(float), labels[0][:64, :64])   # JIT
    thin_borders(labels[0][:64, :64])
    print(f"warping error at t = 0.5, 512x512 ISBI label slices 25..{24 + a.slices} with "
          f"corrupted predictions, {os.cpu_count()} cores")
    print(f"  {'corruption':15s} {'mismatches':>10s} {'left':>6s} {'fast ms':>8s} "
          f"{'ref s':>7s} {'thin ms':>8s}")
    fast_all, ref_all, probs = [], [], []
    for truth in labels:
        for name, prob in corruptions(truth, rng):
            probs.append((prob, truth))
            (warped, mism, kinds), t_fast = timed(metrics.warp_ground_truth, prob, truth, 0.5)
            _, t_thin = timed(thin_borders, prob > 0.5)
            fast_all.append(t_fast)
            t_ref = float("nan")
            if not a.no_ref:
                (r_warped, r_mism), t_ref = timed(ref.warp_ground_truth, prob, truth, 0.5)
                assert (r_warped == warped).all() and len(r_mism) == len(mism)
                ref_all.append(t_ref)
            print(f"  {name:15s} {int(((prob > 0.5) != truth).sum()):10d} {len(mism):6d} "
                  f"{t_fast * 1e3:8.1f} {t_ref:7.1f} {t_thin * 1e3:8.1f}")
    print(f"  warp + classify: {np.mean(fast_all) * 1e3:.1f} ms per slice on average, "
          f"max {max(fast_all) * 1e3:.1f} ms" + (f"; reference {np.mean(ref_all):.1f} s, "
                                                 f"{np.mean(ref_all) / np.mean(fast_all):.0f}x"
                                                 if ref_all else ""))
    stack_p = np.stack([p for p, _ in probs[::5]])
    stack_t = np.stack([t for _, t in probs[::5]])
    _, t_eval = timed(metrics.evaluate, stack_p, stack_t)
    print(f"  metrics.evaluate, all metrics, {len(stack_p)} slices: {t_eval:.2f} s "
          f"({t_eval / len(stack_p):.2f} s per slice)")


if __name__ == "__main__":
    main()
