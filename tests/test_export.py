"""Export (tinyunet.export): ONNX built node by node and TorchScript equal tinyunet's own float64
forward pass at several valid sizes and a batch of 2; a bioimage.io package passes the model
zoo's own test, and fails it with a wrong output size or with weights that differ; the console
command."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from tinyunet import backend, export
from tinyunet.checkpoint import save_checkpoint
from tinyunet.model import valid_input_sizes
from tinyunet.optim import SGD

from .conftest import run_example, small_model

# ONNX and the model zoo need the 'export' extra; the TorchScript test needs only torch
needs_onnx = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
    reason="the 'export' extra: pip install 'tinyunet[export]'")


def trained_like(depth=2, base=4, seed=1):
    """A small network with non-zero biases (an export that drops them must fail)."""
    return small_model(depth, base, seed, biases=True)


@needs_onnx
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_onnx_equals_tinyunet(tmp_path, depth):
    import onnx
    model = trained_like(depth=depth, base=2 if depth == 4 else 4)
    path = export.to_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert proto.ir_version == 8 and proto.opset_import[0].version == 17
    assert {n.op_type for n in proto.graph.node} <= {"Conv", "Relu", "MaxPool", "ConvTranspose",
                                                     "Slice", "Concat", "Softmax"}
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]                 # dynamic batch and space
    assert export.check_export(model, export.onnx_runner(path)) <= 1e-5


@needs_onnx
def test_a_wrong_export_fails_the_check(tmp_path):
    model = trained_like()
    path = export.to_onnx(model, tmp_path / "m.onnx")
    other = trained_like(seed=2)
    assert export.check_export(other, export.onnx_runner(path)) > 1e-3


@pytest.mark.parametrize("depth", [1, 2])
def test_torchscript_equals_tinyunet(tmp_path, depth):
    """The saved TorchScript module, loaded back with torch.jit.load, computes tinyunet's
    forward: the softmax of tinyunet's float32 logits at every pixel, class and batch item, at
    the traced size and at other (non-square) valid sizes, to float32 rounding."""
    torch = pytest.importorskip("torch", reason="TorchScript needs the 'torch' extra")
    model = trained_like(depth=depth)
    path = export.to_torchscript(model, tmp_path / "m.pt")
    net = torch.jit.load(str(path))
    assert isinstance(net, torch.jit.ScriptModule)
    rng = np.random.default_rng(0)
    a, b, c = valid_input_sizes(depth)[:3]                 # a: the size it was traced on
    for h, w in [(a, a), (b, c), (c, a)]:
        x = rng.standard_normal((2, 1, h, w)).astype(np.float32)
        with torch.no_grad():
            p = net(torch.from_numpy(x)).numpy()
        logits = backend.to_numpy(model.forward(x)).astype(np.float64)
        log_p = logits - logits.max(1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
        assert p.shape == logits.shape and p.dtype == np.float32
        assert log_p.std(axis=(2, 3)).min() > 0.01        # outputs that vary across the image
        np.testing.assert_allclose(p, np.exp(log_p), rtol=0, atol=5e-6)
        np.testing.assert_allclose(np.log(p), log_p, rtol=0, atol=2e-5)
    # and the library's own check, against the float64 forward pass
    assert export.check_export(model, export.torchscript_runner(path)) <= 1e-5


@pytest.fixture(params=["uint8", "uint16"])
def checkpoint(tmp_path, request):
    """A checkpoint of a model trained on 8-bit (or 16-bit) images (the tests that take it
    export ONNX)."""
    pytest.importorskip("onnx", reason="the 'export' extra: pip install 'tinyunet[export]'")
    pytest.importorskip("onnxruntime")
    model = trained_like(depth=2, base=4)
    path = tmp_path / "run" / "best.npz"
    path.parent.mkdir()
    save_checkpoint(path, model, SGD(model, 0.01), 7,
                    dict(mean=0.5, std=0.2, image_dtype=request.param,
                         train_config=dict(steps=7, tile=92)))
    return path


def zoo_test(package):
    from bioimageio.core import test_model
    return test_model(str(package / "rdf.yaml")).status


def test_a_bioimageio_package_passes_the_zoo_test_and_fails_it_when_wrong(checkpoint, tmp_path):
    import yaml
    package = export.to_bioimageio(checkpoint, tmp_path / "pkg", formats=("onnx",))
    names = {p.name for p in package.iterdir()}
    assert {"rdf.yaml", "model.onnx", "test_input.npy", "test_output.npy", "README.md",
            "cover.png"} <= names
    doc = yaml.safe_load((package / "rdf.yaml").read_text())
    raw, out = doc["inputs"][0], doc["outputs"][0]
    assert raw["axes"][2]["size"] == dict(min=44, step=4)          # valid sizes of depth 2
    assert out["axes"][2]["size"] == dict(tensor_id="raw", axis_id="y", offset=-40)
    assert raw["preprocessing"][-1] == dict(id="ensure_dtype", kwargs=dict(dtype="float32"))
    assert doc["cite"][0]["doi"] == export.PAPER_DOI and doc["license"] == "MIT"
    assert zoo_test(package) == "passed"
    # a wrong output size: the zoo's test must fail
    wrong = dict(doc)
    wrong["outputs"][0]["axes"][2]["size"]["offset"] = -36
    (package / "rdf.yaml").write_text(yaml.safe_dump(wrong, sort_keys=False))
    assert zoo_test(package) != "passed"
    # weights that differ from the test tensors: fails too
    package2 = export.to_bioimageio(checkpoint, tmp_path / "pkg2", formats=("onnx",))
    export.to_onnx(trained_like(seed=5), package2 / "model.onnx")
    assert zoo_test(package2) != "passed"              # "valid-format": runs, differs


def test_the_export_command(checkpoint, tmp_path, capsys):
    from tinyunet.commands.export import main
    code, out, err = run_example(main, [checkpoint, "--format", "onnx", "--out",
                                        tmp_path / "m.onnx"], capsys)
    assert code == 0 and "within" in out, err
    code, _, err = run_example(main, [checkpoint, "--format", "onnx", "--out",
                                      tmp_path / "m.onnx"], capsys)
    assert code == 2 and "m.onnx exists" in err
    code, _, err = run_example(main, [tmp_path / "none.npz", "--format", "onnx", "--out",
                                      tmp_path / "x.onnx"], capsys)
    assert code == 2 and "no checkpoint at" in err


def test_a_bioimageio_export_to_a_zip_name_writes_a_zip_the_zoo_test_passes(checkpoint, tmp_path,
                                                                           capsys):
    import zipfile

    from bioimageio.core import test_model

    from tinyunet.commands.export import main
    out = tmp_path / "new" / "pkg.zip"                   # into a folder that is not there yet
    code, text, err = run_example(main, [checkpoint, "--format", "bioimageio", "--out", out],
                                  capsys)
    assert code == 0 and f"bioimageio test {out}" in text, err
    assert out.is_file() and zipfile.is_zipfile(out)
    with zipfile.ZipFile(out) as z:
        assert {"rdf.yaml", "model.onnx", "test_input.npy"} <= set(z.namelist())
    assert [p.name for p in out.parent.iterdir()] == ["pkg.zip"]        # nothing left over
    assert test_model(str(out)).status == "passed"


def test_the_console_command():
    p = subprocess.run([sys.executable, "-m", "tinyunet", "--help"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "train     train a U-Net" in p.stdout
    p = subprocess.run([sys.executable, "-m", "tinyunet", "fly"], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown command 'fly'" in p.stderr
    p = subprocess.run([sys.executable, "-m", "tinyunet", "train", "--steps", "0"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr == ("error: argument --steps: must be at least 1, got "
                                              "0 (see --help)\n")


@needs_onnx
def test_the_shipped_model_exports_by_name_and_passes_the_zoo_test(tmp_path, capsys):
    import yaml

    from tinyunet.commands.export import main
    out = tmp_path / "isbi2012_zoo"
    code, text, err = run_example(main, ["isbi2012", "--format", "bioimageio", "--out", out,
                                         "--name", "tinyunet ISBI 2012"], capsys)
    assert code == 0 and "bioimageio test" in text, err
    assert zoo_test(out) == "passed"
    doc = yaml.safe_load((out / "rdf.yaml").read_text())
    assert "ISBI 2012" in doc["training_data"]["name"]
    # the package's README gives the shipped model's own validation scores
    readme = (out / "README.md").read_text()
    assert "scores_last" not in readme and '"rand_error"' in readme and "25-29" in readme


def test_validation_scores_come_from_the_run_beside_a_checkpoint(tmp_path):
    import json
    run, checkpoint = tmp_path, tmp_path / "best.npz"        # only the folder is read
    assert export.validation_scores(checkpoint, {}) is None              # no final_metrics.json
    best = {"pixel_error": 0.05, "rand_error": 0.06}
    last = {"pixel_error": 0.04, "rand_error": 0.07}
    (run / "final_metrics.json").write_text(json.dumps(
        dict(step=5, plain=best, tta=best, last=dict(step=9, plain=last, tta=last))))
    assert export.validation_scores(checkpoint, {})["plain"] == best      # best.npz
    latest = export.validation_scores(run / "latest.npz", {})
    assert latest["step"] == 9 and latest["plain"] == last
    # runs from before the last checkpoint was scored too: their final_metrics.json has no
    # "last", so nothing is known of latest.npz (its best.npz's scores still are)
    (run / "final_metrics.json").write_text(json.dumps(dict(step=5, plain=best, tta=best)))
    assert export.validation_scores(run / "latest.npz", {}) is None
    assert export.validation_scores(checkpoint, {})["plain"] == best


def test_a_shipped_models_scores_are_its_provenances(tmp_path):
    """A shipped model's scores come from its provenance (no run folder beside it): which
    checkpoint was shipped and what it was scored on, then the scores themselves."""
    scores = {"step": 9, "plain": {"rand_error": 0.07}, "tta": {"rand_error": 0.06}}
    prov = {"shipped": "the last checkpoint", "scored_on": "validation slices [25, 30]",
            "scores_last": scores, "steps": 9}
    assert export.validation_scores(tmp_path / "m.npz", {"provenance": prov}) == {
        "checkpoint": "the last checkpoint", "scored_on": "validation slices [25, 30]", **scores}


def test_a_cell_models_package_says_how_its_cells_are_made():
    """The zoo's package holds only the network (P(cell)); a model trained on instance masks
    carries the rule that makes cells of it, with its run's settings, in rdf.yaml's config
    and in its README; a membrane model carries none."""
    model = trained_like(depth=2, base=4)
    files = dict(test_input="t.npy", test_output="o.npy", sample_input="s.tif",
                 sample_output="so.tif", readme="README.md")
    meta = dict(model=model.config, mean=0.5, std=0.2,
                train_config=dict(labels="instances", border=3, min_cell=50))
    doc = export.rdf(meta, "cells", "a cell model", 92, files)
    assert doc["config"]["tinyunet"]["instances"] == dict(
        function="tinyunet.instances.label_cells", threshold=0.5, connectivity=4, min_cell=50,
        border=3)
    readme = export._readme("cells", "a cell model", meta, model, None)
    assert ("the 4-connected components of P(cell) > 0.5, those smaller than 50 px dropped, "
            "then the separation border given back: a background pixel within 3 px of two "
            "cells goes to the nearer one") in readme
    # the settings are those predict --instances reads (cell_options), run's or default
    from tinyunet.instances import BORDER, cell_options
    assert cell_options(meta) == (3, 50)
    older = dict(meta, train_config=dict(labels="instances"))
    assert export.rdf(older, "c", "d", 92, files)["config"]["tinyunet"]["instances"][
        "border"] == BORDER
    membranes = dict(meta, train_config=dict(labels="membrane", border=3, min_cell=50))
    assert "instances" not in export.rdf(membranes, "m", "d", 92, files)["config"]["tinyunet"]
    assert "From probabilities to cells" not in export._readme("m", "d", membranes, model, None)
