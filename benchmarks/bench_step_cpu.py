"""Time one training step (forward, weighted loss, backward) of tinyunet against PyTorch on the CPU.

Same network, same weights (tinyunet's state_dict loaded into PyTorch), same input, same number
of threads, in one run; steps alternate between the two so machine noise hits both alike. Prints
the median step time of each and the ratio tinyunet / PyTorch, and the growth of peak resident memory
over a step of each, above the model and data (measured in a child process per framework). The
logits and every parameter gradient must agree first (float32, the real sizes). Needs torch (pip
install torch==2.13.0, a CPU build).

    python benchmarks/bench_step_cpu.py                  # base 16 and base 64 at 572x572
    python benchmarks/bench_step_cpu.py --base 16 --size 380 --reps 9   # the cpu preset's tile
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
from timing import peak_rss_mib


def setup(base, size, seed=0):
    import tinyunet
    model = tinyunet.UNet(base_channels=base, seed=seed)
    rng = np.random.default_rng(seed)
    out = model.output_size(size)
    x = rng.standard_normal((1, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, 2, (1, out, out))
    weights = rng.uniform(1, 10, (1, out, out)).astype(np.float32)
    return model, x, labels, weights


def tiny_step(model, x, labels, weights):
    import tinyunet
    loss, d = tinyunet.softmax_cross_entropy(model.forward(x, train=True), labels, weights)
    model.backward(d, input_grad=False)               # as in training (PyTorch: x needs none)
    return loss


def torch_setup(model, x, labels, weights):
    import torch
    from tinyunet.torch_unet import TorchUNet
    tm = TorchUNet(base_channels=model.config["base_channels"])
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return tm, torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(weights)


def torch_step(tm, x, labels, weights):
    from tinyunet.torch_unet import weighted_loss
    tm.zero_grad(set_to_none=True)
    loss = weighted_loss(tm(x), labels, weights)
    loss.backward()
    return float(loss.detach())


def memory_child(framework, base, size, threads):
    """Run in a child: one warm-up step and one step; print peak RSS growth in MiB."""
    import torch
    torch.set_num_threads(threads)
    model, x, labels, weights = setup(base, size)
    if framework == "torch":
        args = torch_setup(model, x, labels, weights)
        del model
        step = torch_step
    else:
        args, step = (model, x, labels, weights), tiny_step
    base_rss = peak_rss_mib()
    step(*args)
    step(*args)
    print(peak_rss_mib() - base_rss)


def peak_memory(framework, base, size, threads):
    out = subprocess.run([sys.executable, __file__, "--memory-child", framework, "--base",
                          str(base), "--size", str(size), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench(base, size, reps, threads):
    import torch
    torch.set_num_threads(threads)
    model, x, labels, weights = setup(base, size)
    targs = torch_setup(model, x, labels, weights)
    # same weights, same input: the two must agree, logits and every gradient, before their
    # speed is compared (the CPU engine in float32 at the network's real sizes)
    ours = model.forward(x)
    theirs = targs[0](targs[1]).detach().numpy()
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel < 1e-3, f"tinyunet and PyTorch logits differ (max rel {rel:.1e})"
    l_ours, l_torch = tiny_step(model, x, labels, weights), torch_step(*targs)   # warm-up
    grads = {k: p.grad.numpy() for k, p in targs[0].named_parameters()}
    # per parameter, |difference| / |PyTorch's gradient| (2-norms: a bias's gradient sums a
    # million float32 terms, in another order in each framework)
    grad_rel = max(np.linalg.norm(g - grads[k]) / np.linalg.norm(grads[k])
                   for k, g in model.grads().items())
    assert grad_rel < 1e-3, f"tinyunet and PyTorch gradients differ (max rel {grad_rel:.1e})"
    t_ours, t_torch = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        tiny_step(model, x, labels, weights)
        t1 = time.perf_counter()
        torch_step(*targs)
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_torch.append(t2 - t1)
    return dict(ours=np.median(t_ours), torch=np.median(t_torch), loss=(l_ours, l_torch), rel=rel,
                grad_rel=grad_rel)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--size", type=int, default=572)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        return memory_child(a.memory_child, a.base[0], a.size, a.threads)
    import torch
    print(f"CPU step benchmark: {a.threads} threads, torch {torch.__version__}, "
          f"numpy {np.__version__}, input {a.size}x{a.size}, batch 1, float32")
    print(f"{'base':>5} {'tinyunet s':>11} {'PyTorch s':>10} {'ratio':>6} "
          f"{'tinyunet MiB':>13} {'PyTorch MiB':>12}   max rel. difference: logits, gradients")
    for base in a.base:
        r = bench(base, a.size, a.reps, a.threads)
        mem = ("", "") if a.no_memory else tuple(
            f"{peak_memory(fw, base, a.size, a.threads):.0f}" for fw in ("tinyunet", "torch"))
        print(f"{base:>5} {r['ours']:>11.3f} {r['torch']:>10.3f} {r['ours'] / r['torch']:>6.2f} "
              f"{mem[0]:>13} {mem[1]:>12}   {r['rel']:.1e}, {r['grad_rel']:.1e}", flush=True)


if __name__ == "__main__":
    main()
