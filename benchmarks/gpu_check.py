"""The GPU check: everything the CuPy route must show on a real GPU, in one command.

    python benchmarks/gpu_check.py                     # all sections -> benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --sections parity host_sync --out /tmp/check.json

Prepared on a CPU so that a GPU's minutes go to measuring; under 8 minutes on
one H100 or H200 from a cold start. Each section writes its part of one JSON file; one that fails
is recorded and the others still run.

    tests      the op, loss, model and kernel tests with CuPy (tests/conftest.py's xp fixture adds
               CuPy where a GPU is present): the pytest summary line
    parity     one SGD and one Adam step of a small float64 network with dropout, NumPy against
               CuPy, the readable ops on both: every parameter after the step to 1e-10 (relative)
    host_sync  a kernel that spins for SPIN_S seconds is queued ahead of a real training step: the
               host must come back from the step long before the kernel ends (no wait for the
               device inside a step; tests/test_gpu_route.py checks the same on a CPU stand-in)
    resume     a run on the GPU stopped at step 5 and resumed: its parameters against an
               uninterrupted run's (max relative difference; cuBLAS may sum in another order)
    speed      the paper's network at 572x572, batch 1, the same weights in PyTorch + cuDNN (the
               logits must agree first), in strict FP32 and in TF32, each in a child process:
               training step (forward, weighted loss, backward), inference of one tile, peak
               memory (CuPy's pool, torch.cuda.max_memory_allocated), and one 512x512 slice by
               overlap-tile; the issue's targets beside the numbers

Exit status: 0 when every section passed, 1 when one failed, 2 when no GPU is present (it says so
and measures nothing).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))    # the speed scripts' shared helpers
from timing import median_time                              # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "parity", "host_sync", "resume", "speed")
SPIN_S = 2.0
# the GPU route's targets: tinyunet / PyTorch
TARGETS = {"step_ratio": 1.5, "memory_ratio": 1.5, "slice_ms": 30.0}


def relative_error(a, b):
    """||a - b|| / ||b|| (0 when both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den else float(np.linalg.norm(a))


# ---- sections that run on any array module (tests/test_gpu_check.py runs them on a stand-in) --
def small_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 1, 60, 60))
    labels = rng.integers(0, 2, (1, 20, 20)).astype(np.uint8)
    weights = rng.uniform(1, 10, (1, 20, 20))
    return x, labels, weights


def parity():
    """One SGD and one Adam step, float64, readable ops: CPU (NumPy) against GPU."""
    from tinyunet import Adam, SGD, UNet, backend, softmax_cross_entropy
    x, labels, weights = small_problem()
    out = {}
    for name, opt_cls, kw in (("sgd", SGD, dict(lr=0.05, momentum=0.9)),
                              ("adam", Adam, dict(lr=0.01))):
        params = {}
        for device in ("cpu", "gpu"):
            model = UNet(base_channels=4, depth=2, dtype="float64", dropout=0.5, seed=3,
                         engine="readable", device=device)
            opt = opt_cls(model, **kw)
            args = [backend.to_device(a, device) for a in (x, labels, weights)]
            loss, d = softmax_cross_entropy(model.forward(args[0], train=True), *args[1:])
            model.backward(d)
            opt.step()
            params[device] = {k: backend.to_numpy(v) for k, v in model.params.items()}
            out[f"{name}_loss_{device}"] = float(loss)
        worst = max(relative_error(params["gpu"][k], params["cpu"][k]) for k in params["cpu"])
        out[f"{name}_max_relative_error"] = worst
    out["ok"] = all(out[f"{n}_max_relative_error"] <= 1e-10 for n in ("sgd", "adam"))
    return out


def _trainer(run_dir, device="gpu", steps=8, callback=None, resume=False):
    from tinyunet.config import TrainConfig
    from tinyunet.data import synthetic_em
    from tinyunet.train import Trainer
    images, labels = synthetic_em(n=3, size=96, cell_size=16, seed=1)
    cfg = TrainConfig(base_channels=4, depth=2, tile=92, steps=steps, lr=0.01, warmup=2,
                      val_every=4, log_every=2, seed=0, optimizer="adam", dropout=0.3,
                      ema=0.9, device=device)
    return Trainer(cfg, (images[:2], labels[:2]), (images[2:], labels[2:]), run_dir,
                   resume=resume, progress=False, callback=callback)


def resume(tmp):
    """A run stopped after step 5 and resumed, against one run straight through."""
    from tinyunet import backend
    full = _trainer(Path(tmp) / "full")
    full.run()

    def stop(trainer):
        if trainer.step == 5:
            raise KeyboardInterrupt

    part = _trainer(Path(tmp) / "part", callback=stop)
    try:
        part.run()
    except KeyboardInterrupt:
        pass
    again = _trainer(Path(tmp) / "part", resume=True)
    start = again.step
    again.run()
    worst = max(relative_error(backend.to_numpy(again.model.params[k]), backend.to_numpy(v))
                for k, v in full.model.params.items())
    return dict(resumed_at=start, max_relative_error=worst, exact=worst == 0.0,
                ok=start == 5 and worst <= 1e-6)


# ---- sections that need CUDA -----------------------------------------------------------------
def run_tests():
    files = ["tests/test_ops.py", "tests/test_loss.py", "tests/test_model.py",
             "tests/test_kernels_conv.py"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                       cwd=ROOT, capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    return dict(returncode=p.returncode, summary=lines[-1] if lines else p.stderr[-500:],
                ok=p.returncode == 0)


SPIN = r'''
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
'''


def host_sync(tmp):
    """The host's time in a training step queued behind a kernel that spins for SPIN_S s."""
    import cupy
    t = _trainer(Path(tmp) / "probe", steps=50)
    for _ in range(3):                                  # warm up: kernels compiled, pool grown
        t.train_step()
        t.step += 1
    cupy.cuda.Device().synchronize()
    rate_khz = cupy.cuda.runtime.getDeviceProperties(0)["clockRate"]
    spin = cupy.RawKernel(SPIN, "spin")
    spin((1,), (1,), (np.int64(SPIN_S * rate_khz * 1e3),))
    t0 = time.perf_counter()
    loss = t.train_step()
    host = time.perf_counter() - t0
    cupy.cuda.Device().synchronize()
    total = time.perf_counter() - t0
    return dict(spin_s=SPIN_S, host_s=host, total_s=total, loss=float(loss),
                ok=host < 0.25 * SPIN_S and total >= 0.9 * SPIN_S)


def speed_child(mode, reps):
    """One precision mode, in this (child) process: the JSON of its numbers on stdout."""
    import cupy
    import torch

    import tinyunet
    from tinyunet.infer import covering_tile, predict_tiled
    from tinyunet.torch_unet import TorchUNet, weighted_loss
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    model = tinyunet.UNet(base_channels=64, seed=0, device="gpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 572, 572)).astype(np.float32)
    labels = rng.integers(0, 2, (1, 388, 388)).astype(np.uint8)
    weights = rng.uniform(1, 10, (1, 388, 388)).astype(np.float32)
    gx, gl, gw = (cupy.asarray(a) for a in (x, labels, weights))
    tm = TorchUNet(base_channels=64).cuda()
    tm.load_state_dict({k: torch.from_numpy(tinyunet.to_numpy(v))
                        for k, v in model.state_dict().items()})
    tx, tl, tw = (torch.from_numpy(a).cuda() for a in (x, labels.astype(np.int64), weights))
    with torch.no_grad():
        agree = relative_error(tinyunet.to_numpy(model.forward(gx, keep=False)),
                               tm(tx).cpu().numpy())
    sync_c, sync_t = cupy.cuda.Device().synchronize, torch.cuda.synchronize

    def tiny_step():
        _, d = tinyunet.softmax_cross_entropy(model.forward(gx, train=True), gl, gw,
                                              check_labels=False)
        model.backward(d, input_grad=False)

    def torch_step():
        tm.zero_grad(set_to_none=True)
        weighted_loss(tm(tx), tl, tw).backward()

    def torch_infer():
        with torch.no_grad():
            tm(tx)

    pool = cupy.get_default_memory_pool()
    out = dict(mode=mode, logits_relative_error=agree)
    pool.free_all_blocks()                                   # the logits check's blocks go
    out["tinyunet_step_s"] = median_time(tiny_step, reps, sync_c, warmup=2)
    out["tinyunet_peak_bytes"] = pool.total_bytes()    # reserved: the pool keeps what a step needed
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    out["torch_step_s"] = median_time(torch_step, reps, sync_t, warmup=2)
    out["torch_peak_bytes"] = torch.cuda.max_memory_reserved()   # reserved too: like for like
    out["tinyunet_tile_s"] = median_time(lambda: model.predict_proba(gx), reps, sync_c, warmup=2)
    out["torch_tile_s"] = median_time(torch_infer, reps, sync_t, warmup=2)
    isbi = ROOT.parent / "shared" / "data" / "isbi2012" / "test-volume.tif"
    if isbi.exists():
        import tifffile
        image = tifffile.imread(isbi)[0]
    else:
        image = rng.integers(0, 256, (512, 512)).astype(np.uint8)
    image = (image.astype(np.float32) / 255 - 0.5) / 0.2
    tile = covering_tile(512, 4)
    out["slice_tile"] = tile
    out["slice_s"] = median_time(lambda: predict_tiled(model, image, tile=tile, channel=1),
                                 reps, sync_c, warmup=2)
    out["step_ratio"] = out["tinyunet_step_s"] / out["torch_step_s"]
    out["memory_ratio"] = out["tinyunet_peak_bytes"] / out["torch_peak_bytes"]
    out["ok"] = agree <= (1e-2 if tf32 else 1e-4)
    print(json.dumps(out))


def speed(reps):
    results = {}
    for mode in ("fp32", "tf32"):
        env = dict(os.environ, CUPY_TF32="1" if mode == "tf32" else "0")
        p = subprocess.run([sys.executable, __file__, "--speed-child", mode, "--reps", str(reps)],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        try:
            results[mode] = json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            results[mode] = dict(ok=False, error=(p.stderr or p.stdout)[-2000:])
    results["ok"] = all(r.get("ok") for r in results.values() if isinstance(r, dict))
    return results


# ---- the report -------------------------------------------------------------------------------
def summary(results):
    """Lines of the report and the exit status (0: every section ok, 1: one failed)."""
    lines = []
    for name, r in results.items():
        if name == "device" or not isinstance(r, dict):
            continue
        lines.append(f"{name:10s} {'ok' if r.get('ok') else 'FAILED'}")
        if name == "speed":
            for mode in ("fp32", "tf32"):
                m = r.get(mode, {})
                if "step_ratio" in m:
                    lines.append(
                        f"  {mode}: step {m['tinyunet_step_s'] * 1e3:.1f} / "
                        f"{m['torch_step_s'] * 1e3:.1f} ms = {m['step_ratio']:.2f} (target <= "
                        f"{TARGETS['step_ratio']}), memory {m['memory_ratio']:.2f}x (<= "
                        f"{TARGETS['memory_ratio']}), tile {m['tinyunet_tile_s'] * 1e3:.1f} / "
                        f"{m['torch_tile_s'] * 1e3:.1f} ms, 512x512 slice "
                        f"{m['slice_s'] * 1e3:.1f} ms (< {TARGETS['slice_ms']:.0f})")
                elif m:
                    lines.append(f"  {mode}: {m.get('error', '')[-300:]}")
        elif name == "tests":
            lines.append(f"  {r.get('summary')}")
        else:
            shown = {k: v for k, v in r.items() if k != "ok"}
            lines.append("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in shown.items()))
    ok = all(r.get("ok") for k, r in results.items() if k != "device" and isinstance(r, dict))
    return lines, 0 if ok else 1


def device_info():
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return dict(name=name, cupy=cupy.__version__, cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                python=platform.python_version(), date=time.strftime("%Y-%m-%d"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions (median)")
    ap.add_argument("--speed-child", choices=("fp32", "tf32"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.speed_child:
        return speed_child(args.speed_child, args.reps)
    from tinyunet import backend
    if not backend.gpu_available():
        why = ("CuPy is not installed" if backend._cupy is None
               else "CuPy is installed but sees no CUDA device")
        print(f"no GPU here ({why}): the GPU check measures nothing on this machine; run it "
              f"where `python -c 'import cupy; cupy.cuda.runtime.getDeviceCount()'` finds one",
              file=sys.stderr)
        return 2
    import tempfile
    results = {"device": device_info()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sections:
            t0 = time.perf_counter()
            try:
                results[name] = {"tests": run_tests, "parity": parity,
                                 "host_sync": lambda: host_sync(tmp),
                                 "resume": lambda: resume(tmp),
                                 "speed": lambda: speed(args.reps)}[name]()
            except Exception as e:                       # recorded; the other sections run
                results[name] = dict(ok=False, error=f"{type(e).__name__}: {e}")
            results[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {'ok' if results[name].get('ok') else 'FAILED'} "
                  f"({results[name]['seconds']} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    lines, status = summary(results)
    print(f"{results['device']['name']}, CuPy {results['device']['cupy']}, "
          f"{results['device']['date']}")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
