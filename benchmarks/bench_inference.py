"""Time to segment one 512x512 ISBI slice with the paper's network through predict_tiled, against a
PyTorch forward of the same tiles; and the peak memory of inference as the number of tiles grows.

The paper: under a second on a 2015 GPU (NVIDIA Titan, 6 GB). The time does not depend on the
weights, so a freshly initialised network is used (the same weights in the PyTorch copy, whose
probabilities must agree first). Tile 572 (the paper's) needs 2x2 tiles for a 512x512 slice;
tile 700 covers it in one. PyTorch runs the same tiles (batch 1, torch.no_grad), nothing else.

Memory: the peak resident-memory growth of predict_tiled in a fresh child process (above the
model and the compiled kernels), for a 512x512 and a 1024x1024 image (4 and 9 tiles of 572):
inference keeps no activation for a backward pass and frees each tile's maps, so it should not
grow with the number of tiles (only the image and its probability map do: a few MiB).

    python benchmarks/bench_inference.py [--device cpu|gpu] [--tiles 572 700] [--reps 3]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
from timing import peak_rss_mib


import tinyunet                                                   # noqa: E402
from tinyunet.data import default_isbi_dir, load_stack           # noqa: E402
from tinyunet.infer import mirror_pad, predict_tiled, tile_grid  # noqa: E402


def slice_image():
    path = default_isbi_dir() / "test-volume.tif"
    image = (load_stack(path)[0] if path.exists()
             else np.random.default_rng(0).integers(0, 256, (512, 512)))
    return (image.astype(np.float32) / 255 - 0.5) / 0.2


def torch_tiles(tm, image, tile, out):
    """PyTorch forward + softmax over the same tiles as predict_tiled (the same mirrored image)."""
    import torch
    margin = (tile - out) // 2
    ys, ext = tile_grid(image.shape[0], out, 16)
    padded = mirror_pad(image[None], margin, margin + ext - image.shape[0], margin,
                        margin + ext - image.shape[1])[0]
    result = np.empty((2, ext, ext), np.float32)
    with torch.no_grad():
        for y in ys:
            for x in ys:
                t = torch.from_numpy(np.ascontiguousarray(padded[None, None, y:y + tile, x:x + tile]))
                result[:, y:y + out, x:x + out] = torch.softmax(tm(t), 1)[0].numpy()
    return result[:, :image.shape[0], :image.shape[1]]


def memory_child(size, tile):
    model = tinyunet.UNet()
    image = np.tile(slice_image(), (size // 512, size // 512))
    predict_tiled(model, image[:64, :64], tile=204)               # compile the kernels (small)
    before = peak_rss_mib()
    predict_tiled(model, image, tile=tile)
    print(peak_rss_mib() - before)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiles", type=int, nargs="*", default=[572, 700])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true", help="tinyunet only")
    ap.add_argument("--memory-child", type=int, nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        return memory_child(*a.memory_child)
    x = slice_image()
    model = tinyunet.UNet(device=a.device)                   # the paper's network
    tm = None
    if not a.no_torch and a.device == "cpu":
        import torch
        from tinyunet.torch_unet import TorchUNet
        torch.set_num_threads(os.cpu_count())
        tm = TorchUNet()
        tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
        tm.eval()
    print(f"one 512x512 slice, paper network (31,030,658 parameters), float32, {a.device}, "
          f"{os.cpu_count()} CPU cores, median of {a.reps}")
    for tile in a.tiles:
        out = model.output_size(tile)
        n = len(tile_grid(512, out, 16)[0]) ** 2
        ours = predict_tiled(model, x, tile=tile)                 # warm-up
        line = f"  tile {tile} ({n} tile{'s' if n > 1 else ''} of {out}x{out}):"
        ts, tt = [], []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            predict_tiled(model, x, tile=tile)
            ts.append(time.perf_counter() - t0)
            if tm is not None:
                t0 = time.perf_counter()
                theirs = torch_tiles(tm, x, tile, out)
                tt.append(time.perf_counter() - t0)
        line += f" tinyunet {np.median(ts):.2f} s"
        if tm is not None:
            diff = np.abs(ours - theirs).max()
            assert diff < 1e-3, f"tinyunet and PyTorch probabilities differ by {diff:.1e}"
            line += f", PyTorch {np.median(tt):.2f} s, ratio {np.median(ts) / np.median(tt):.2f}"
        print(line, flush=True)
    if a.device == "cpu":
        for size in (512, 1024):
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(size), "572"],
                                 capture_output=True, text=True, check=True).stdout
            n = len(tile_grid(size, 388, 16)[0]) ** 2
            print(f"  peak memory growth of predict_tiled, {size}x{size} image, {n} tiles of 572: "
                  f"{float(out.split()[-1]):.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
