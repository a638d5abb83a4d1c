"""The architecture listing agrees with the paper's fig. 1 and with a real forward pass; the
figures are written."""
import numpy as np

from tinyunet import UNet, conv3x3, crop_and_concat, max_pool2x2, up_conv2x2
from tinyunet.config import best_score, best_step
from tinyunet.diagrams import draw_unet, feature_maps
from tinyunet.plots import plot_curves, plot_predictions


def test_feature_maps_of_the_paper_network_are_fig_1():
    maps = feature_maps(UNet(), 572)
    conv2 = [(m.channels, m.size) for m in maps if m.name.endswith("conv2")]
    assert conv2 == [(64, 568), (128, 280), (256, 136), (512, 64), (1024, 28),
                     (512, 52), (256, 100), (128, 196), (64, 388)]
    concat = [(m.channels, m.size) for m in maps if m.op == "crop_and_concat"]
    assert concat == [(1024, 56), (512, 104), (256, 200), (128, 392)]
    assert [m.size for m in maps if m.op == "max_pool"] == [284, 140, 68, 32]
    assert maps[0] == ("input", "input", 0, 1, 572) and maps[-1] == ("out", "conv1x1", 0, 2, 388)


def test_feature_maps_match_a_forward_pass(monkeypatch):
    """Record the output shape of every op during a real forward and compare."""
    model = UNet(in_channels=2, n_classes=3, base_channels=3, depth=3, seed=0,
                 engine="readable")                    # the readable ops, which the spies see
    seen = []
    for mod in (conv3x3, max_pool2x2, up_conv2x2, crop_and_concat):
        def spy(*args, _f=mod.forward, **kw):
            out = _f(*args, **kw)
            seen.append(out[0].shape[1:3])            # (channels, size)
            return out
        monkeypatch.setattr(mod, "forward", spy)
    logits = model.forward(np.zeros((1, 2, 100, 100), np.float32))
    maps = feature_maps(model, 100)
    assert [(m.channels, m.size) for m in maps[1:-1]] == seen
    assert (maps[-1].channels, maps[-1].size) == logits.shape[1:3]


def test_figures_are_written(tmp_path):
    draw_unet(UNet(base_channels=2, depth=2), 60).savefig(tmp_path / "unet.png")
    log = [dict(step=1, loss=0.7), dict(step=2, loss=0.5), dict(step=2, val=dict(pixel_error=0.2,
           rand_error=0.5)), dict(step=4, loss=0.4), dict(step=4, val=dict(pixel_error=0.3,
                                                                          rand_error=0.6))]
    plot_curves(log, tmp_path / "curves.png", best_step=2)
    rng = np.random.default_rng(0)
    plot_predictions(rng.random((8, 8)), rng.random((8, 8)) > 0.5, rng.random((8, 8)),
                     rng.random((8, 8)) * 10, tmp_path / "pred.png", "a title")
    for name in ("unet.png", "curves.png", "pred.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_best_step_is_the_first_minimum_after_training():
    val = lambda step, e: dict(step=step, val=dict(pixel_error=0.1, rand_error=e))   # noqa: E731
    log = [val(0, 0.1), dict(step=5, loss=1.0), val(5, 0.4), val(10, 0.3), val(15, 0.3),
           val(20, 0.35)]
    assert best_step(log, "membranes") == 10     # not the untrained step 0, not the later tie
    assert best_step([val(0, 0.5)], "membranes") is None
    # cells: the highest SEG; a validation with no reference cell (NaN) is never the best
    seg = lambda step, v: dict(step=step, val=dict(seg=v, f1=0.5))   # noqa: E731
    assert best_step([seg(5, 0.6), seg(10, float("nan")), seg(15, 0.7), seg(20, 0.7)],
                     "instances") == 15
    assert best_step([seg(5, float("nan")), seg(10, float("nan"))], "instances") is None
    assert best_score(dict(seg=float("nan")), "instances") == float("inf")
    assert best_score(dict(rand_error=0.25), "membranes") == 0.25
