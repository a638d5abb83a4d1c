"""Export (tinyunet.export): ONNX built node by node and TorchScript equal tinyunet's own float64
forward pass at several valid sizes and a batch of 2; a bioimage.io package passes the model
zoo's own test, and fails it with a wrong output size or with weights that differ; the console
command."""
import importlib.util
import subprocess
import sys
from pathlib import Path

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
    # every node has a name of its own (what Netron and onnxruntime's errors show): a
    # convolution's is its layer's, the name of its weights less ".weight"
    names = [n.name for n in proto.graph.node]
    assert all(names) and len(set(names)) == len(names)
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 5 * depth + 3    # a level: 2 down, 1 up-convolution + 2 up; 2 + 1 out
    assert all(n.input[1] == n.name + ".weight" for n in convs)
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


@needs_onnx
@pytest.mark.parametrize("name", ["dic-hela", "phc-u373"])
def test_the_cell_models_export_by_name_and_pass_the_zoo_test(name, tmp_path, capsys):
    """A shipped cell model's package passes the zoo's test and states its own rule for cells
    (the run's threshold, minimum size and border), which the package's network does not hold."""
    import yaml

    from tinyunet.checkpoint import load_model
    from tinyunet.commands.export import main
    from tinyunet.instances import recipe
    out = tmp_path / f"{name}_zoo"
    code, text, err = run_example(main, [name, "--format", "bioimageio", "--out", out], capsys)
    assert code == 0 and "bioimageio test" in text, err
    assert zoo_test(out) == "passed"
    doc = yaml.safe_load((out / "rdf.yaml").read_text())
    _, meta = load_model(name)
    assert doc["config"]["tinyunet"]["instances"] == recipe(meta)
    assert doc["training_data"]["name"] == "Cell Tracking Challenge"
    rule = recipe(meta)
    assert f"P(cell) > {rule['threshold']:g}, those smaller than {rule['min_cell']} px" in \
        (out / "README.md").read_text()


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
    assert cell_options(meta) == (3, 50, 0.5)
    older = dict(meta, train_config=dict(labels="instances"))
    assert export.rdf(older, "c", "d", 92, files)["config"]["tinyunet"]["instances"][
        "border"] == BORDER
    membranes = dict(meta, train_config=dict(labels="membrane", border=3, min_cell=50))
    assert "instances" not in export.rdf(membranes, "m", "d", 92, files)["config"]["tinyunet"]
    assert "From probabilities to cells" not in export._readme("m", "d", membranes, model, None)


def test_the_readme_says_what_the_package_computes_and_how_it_was_trained():
    """README.md: a title, the description, then the sections What it computes, Training,
    Validation (with the scores given, as JSON) and Cite, each heading between blank lines as
    Markdown wants them; the numbers are the model's and its run's. Worked out for depth 2:
    valid sizes 44 + 4 n; each 3 x 3 convolution takes 1 px off each side, two per level, at
    scales 1, 2, 4 (bottom), 2, 1: 2 + 4 + 8 + 4 + 2 = 20 px a side, 40 px smaller; 16-bit
    grey values are divided by 65535."""
    import json
    model = trained_like(depth=2, base=4)
    meta = dict(model=model.config, mean=0.25, std=0.125, image_dtype="uint16",
                train_config=dict(steps=7, optimizer="sgd", tile=92, weighting="paper",
                                  data=dict(source="/data/isbi2012")))
    scores = {"checkpoint": "best.npz", "step": 5, "plain": {"rand_error": 0.0625}}
    readme = export._readme("my model", "What it does.", meta, model, scores)
    lines = readme.split("\n")
    assert lines[:6] == ["# my model", "", "What it does.", "", "## What it computes", ""]
    headings = [k for k, line in enumerate(lines) if line.startswith("#")]
    assert [lines[k] for k in headings] == ["# my model", "## What it computes", "## Training",
                                            "## Validation", "## Cite"]
    for k in headings[1:]:
        assert lines[k - 1] == lines[k + 1] == "", lines[k - 1:k + 2]
    computes, training = lines[headings[1] + 2], lines[headings[2] + 2]
    assert computes == ("Input: one grey channel, any size of the form 44 + 4 n px (valid tile "
                        "sizes); output: P(class) per pixel for 2 classes (background, cell), "
                        "40 px smaller than the input (valid convolutions: no padding). "
                        "Preprocessing: grey values / 65535 (uint16), minus 0.250000, divided "
                        "by 0.125000 (the training images' mean and standard deviation).")
    assert training == ("Trained with tinyunet: 7 steps of sgd on tiles of 92 px, the weighted "
                        "cross-entropy of the paper (weighting paper), elastic deformation, "
                        "data /data/isbi2012.")
    fences = [k for k, line in enumerate(lines) if line == "```"]
    assert len(fences) == 2 and headings[3] < fences[0] < fences[1] < headings[4]
    assert json.loads("\n".join(lines[fences[0] + 1:fences[1]])) == scores
    assert readme.endswith(f"\n## Cite\n\n{export.PAPER} (doi:{export.PAPER_DOI}).\n")


def test_the_check_is_the_largest_difference_over_seeded_inputs_of_several_sizes():
    """check_export runs the export on inputs drawn from default_rng(seed) (seed 0 unless
    given), a batch of 2 of each of the three smallest valid sizes and one of the smallest by
    the largest (non-square), float32, and gives the largest absolute difference from the
    float64 forward over all of them: here an export off by 0.01 k on its k-th input is off by
    0.03."""
    model = trained_like(depth=2, base=2)
    seen = []

    def run(x):
        seen.append(x)
        return export.reference_probabilities(model, x) + 0.01 * (len(seen) - 1)

    assert export.check_export(model, run) == pytest.approx(0.03, rel=0, abs=1e-12)
    rng = np.random.default_rng(0)
    want = [(44, 44), (48, 48), (52, 52), (44, 52)]              # depth 2: 44 + 4 n
    assert [x.shape for x in seen] == [(2, 1, h, w) for h, w in want]
    for x, (h, w) in zip(seen, want):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, rng.standard_normal((2, 1, h, w)).astype(np.float32))
    again = []
    export.check_export(model, lambda x: again.append(x) or export.reference_probabilities(
        model, x), seed=0, batch=1, sizes=[48])
    np.testing.assert_array_equal(again[0], np.random.default_rng(0).standard_normal(
        (1, 1, 48, 48)).astype(np.float32))


@needs_onnx
def test_a_torchscript_export_is_checked_by_running_the_file_it_wrote(tmp_path, monkeypatch):
    """export(checkpoint, "torchscript", out) writes out and checks that file with the
    TorchScript runner (stood in for here by ONNX, so that no PyTorch is needed): it returns
    (out, the check's largest difference)."""
    from .conftest import write_checkpoint
    checkpoint, _ = write_checkpoint(tmp_path / "best.npz", trained_like())
    ran = []

    def runner(path):
        ran.append(path)
        return export.onnx_runner(path)
    monkeypatch.setattr(export, "to_torchscript", export.to_onnx)
    monkeypatch.setattr(export, "torchscript_runner", runner)
    out = tmp_path / "m.pt"
    path, worst = export.export(checkpoint, "torchscript", out)
    assert path == out and ran == [out] and out.is_file()
    assert 0 < worst <= 1e-5


@needs_onnx
def test_the_onnx_check_runs_on_onnxruntimes_cpu_provider(tmp_path, monkeypatch):
    """The check runs the ONNX file on the CPU provider, named (a GPU build of onnxruntime
    refuses a session whose providers are not named)."""
    import onnxruntime
    made = []
    session = onnxruntime.InferenceSession

    def spy(path, **kw):
        made.append(kw)
        return session(path, **kw)
    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    model = trained_like()
    run = export.onnx_runner(export.to_onnx(model, tmp_path / "m.onnx"))
    assert made == [dict(providers=["CPUExecutionProvider"])]
    x = np.zeros((1, 1, 44, 44), np.float32)
    assert run(x).shape == (1, 2, 4, 4)                              # 44 - 40


def test_the_rdf_names_its_axes_weights_authors_and_output_size(monkeypatch):
    """rdf.yaml: the axes batch, channel, y, x (the ids the spec's tools read); the output's
    size is the input's plus `offset` (default: minus twice the margin, -40 at depth 2); the
    TorchScript weights name the ONNX ones as their parent where both are there (the spec wants
    one root) and none where they are alone; the authors given, else tinyunet."""
    import sys
    from types import SimpleNamespace
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(__version__="2.3.1+cpu"))
    model = trained_like(depth=2, base=4)
    meta = dict(model=model.config, mean=0.5, std=0.2)
    files = dict(test_input="t.npy", test_output="o.npy", sample_input="s.tif",
                 sample_output="so.tif", readme="README.md", onnx="model.onnx",
                 torchscript="model.pt")
    doc = export.rdf(meta, "m", "d", 92, files)
    for tensor in doc["inputs"] + doc["outputs"]:
        assert [a.get("id", a["type"]) for a in tensor["axes"]] == ["batch", "channel", "y",
                                                                    "x"]
    assert [a["size"] for a in doc["outputs"][0]["axes"][2:]] == [
        dict(tensor_id="raw", axis_id="y", offset=-40), dict(tensor_id="raw", axis_id="x",
                                                             offset=-40)]
    assert doc["weights"] == dict(
        onnx=dict(source="model.onnx", opset_version=17),
        torchscript=dict(source="model.pt", pytorch_version="2.3.1", parent="onnx"))
    assert doc["authors"] == [dict(name="tinyunet")]
    alone = {k: v for k, v in files.items() if k != "onnx"}
    other = export.rdf(meta, "m", "d", 92, alone, offset=-36, authors=[dict(name="A. Person")])
    assert other["weights"] == dict(torchscript=dict(source="model.pt",
                                                     pytorch_version="2.3.1"))
    assert [a["size"]["offset"] for a in other["outputs"][0]["axes"][2:]] == [-36, -36]
    assert other["authors"] == [dict(name="A. Person")]


def test_a_package_goes_into_new_folders_with_the_scores_in_its_rdf(tmp_path):
    """to_bioimageio makes the package's folder and the folders above it; the scores given are
    in rdf.yaml's config (tinyunet: scores) as in the README."""
    import json

    from .conftest import write_checkpoint
    yaml = pytest.importorskip("yaml", reason="the 'export' extra: pip install 'tinyunet[export]'")
    checkpoint, _ = write_checkpoint(tmp_path / "best.npz", trained_like())
    scores = {"checkpoint": "best.npz", "step": 5, "plain": {"rand_error": 0.0625}}
    out = export.to_bioimageio(checkpoint, tmp_path / "new" / "deeper" / "pkg", formats=(),
                               scores=scores)
    assert out == tmp_path / "new" / "deeper" / "pkg"
    doc = yaml.safe_load((out / "rdf.yaml").read_text())
    assert doc["config"]["tinyunet"]["scores"] == scores
    assert json.dumps(scores, indent=1) in (out / "README.md").read_text()


@needs_onnx
def test_a_zip_goes_into_an_existing_folder_and_is_built_beside_it(tmp_path, monkeypatch):
    """A .zip out in a folder that is there already; the package is put together in a
    temporary folder inside the zip's own folder (not the system's temporary folder, which may
    be small or elsewhere), which goes afterwards."""
    import zipfile

    from .conftest import write_checkpoint
    checkpoint, _ = write_checkpoint(tmp_path / "run" / "best.npz", trained_like(base=2))
    built = []
    to_bioimageio = export.to_bioimageio

    def spy(checkpoint, out, **kw):
        built.append(Path(out))
        return to_bioimageio(checkpoint, out, **kw)
    monkeypatch.setattr(export, "to_bioimageio", spy)
    find_spec = importlib.util.find_spec             # PyTorch taken as absent: ONNX weights only
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else find_spec(name, *a))
    out = tmp_path / "pkg.zip"
    assert export.export(checkpoint, "bioimageio", out)[0] == out
    assert len(built) == 1 and built[0].parent.parent == tmp_path
    assert not built[0].parent.exists()
    with zipfile.ZipFile(out) as z:
        assert {"rdf.yaml", "model.onnx"} <= set(z.namelist())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg.zip", "run"]
