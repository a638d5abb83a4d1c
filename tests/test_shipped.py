"""The models that ship with tinyunet: checkpoint.ship writes the averaged parameters
in float32 with their provenance and nothing to resume from; the shipped ISBI model loads by
name, says how it was made, scores the validation slices it never trained on exactly as its
provenance says, and runs through predict.py --model; so do the cell models (dic-hela,
phc-u373), whose cards also say how their cells are made."""
import json

import numpy as np
import pytest

from tinyunet import UNet
from tinyunet.checkpoint import SHIPPED, load_checkpoint, load_model, save_checkpoint, ship
from tinyunet.optim import EMA, SGD

SHIPPED_JSON = SHIPPED["isbi2012"].with_suffix(".json")
CELL_MODELS = {"dic-hela": "DIC-C2DH-HeLa", "phc-u373": "PhC-C2DH-U373"}


def test_ship_keeps_the_average_in_float32_with_provenance_and_no_optimizer(tmp_path):
    model = UNet(base_channels=2, depth=2, seed=0, dtype="float64")
    ema = EMA(model, decay=0.5)
    for _ in range(3):
        for p in model.params.values():
            p += 0.25
        ema.update()
    path = tmp_path / "latest.npz"
    save_checkpoint(path, model, SGD(model, 0.01), 3,
                    dict(mean=0.4, std=0.2, image_dtype="uint8", train_config=dict(steps=3)),
                    ema=ema)
    prov = {"command": "train", "steps": 3}
    out = ship(path, tmp_path / "shipped.npz", prov)
    meta, params, buffers = load_checkpoint(out)
    assert meta["provenance"] == prov and meta["step"] == 3
    # a checkpoint's header (checkpoint.py), its entries for resuming present and empty
    assert {k: meta[k] for k in ("optimizer", "dropout_rng", "ema")} == \
        {"optimizer": None, "dropout_rng": None, "ema": None} and not buffers
    assert (meta["mean"], meta["std"], meta["image_dtype"]) == (0.4, 0.2, "uint8")
    for k, v in params.items():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, ema.average[k].astype(np.float32))
    assert not np.allclose(params["out.bias"], model.params["out.bias"])   # the average, not raw
    loaded, meta2 = load_model(out)
    assert loaded.dtype == np.float32 and meta2["provenance"] == prov


def test_the_ship_command_ships_a_finished_run_with_its_provenance(tmp_path, capsys):
    """tinyunet ship: a finished run -> NAME.npz + NAME.json (scores of the last checkpoint,
    the data, the steps); an unfinished run, a bad name or an existing model is one line."""
    from tinyunet.commands import ship as command

    from .conftest import error_line, run_example, small_trainer
    trainer = small_trainer(tmp_path / "run", steps=3, ema=0.5)
    trainer.run()
    err = error_line(command.main, [tmp_path / "run", "--name", "m", "--out", tmp_path], capsys)
    assert "is not a finished run (no final_metrics.json" in err
    from tinyunet.train import final_report
    final_report(trainer, "cpu")
    argv = [tmp_path / "run", "--name", "tiny-model", "--out", tmp_path / "models"]
    code, out, err = run_example(command.main, argv, capsys)
    assert code == 0 and "wrote" in out, err
    prov = json.loads((tmp_path / "models" / "tiny-model.json").read_text())
    assert prov["steps"] == 3 and prov["scores_last"]["step"] == 3
    assert "rand_error" in prov["scores_last"]["plain"] and prov["recipe"] == "--preset tiny"
    assert "instances" not in prov and "silver" not in prov["data"]     # membranes, no GT+ST
    assert prov["scored_on"] == f"validation slices {prov['data']['val_slices']}, which the " \
        "model never trained on"
    model, meta = load_model(tmp_path / "models" / "tiny-model.npz")
    assert meta["provenance"] == prov and meta["optimizer"] is None
    assert "exists: --overwrite" in error_line(command.main, argv, capsys)
    (tmp_path / "models" / "tiny-model.npz").unlink()                # its card alone is kept too
    assert "tiny-model.json exists: --overwrite" in error_line(command.main, argv, capsys)
    assert "letters, digits" in error_line(command.main, [tmp_path / "run", "--name", "a/b"],
                                           capsys)
    assert "no such run directory" in error_line(command.main, [tmp_path / "nowhere", "--name",
                                                                "m"], capsys)


def test_a_model_shipped_into_the_models_folder_is_found_by_name(tmp_path):
    """What predict --model NAME and export offer: isbi2012 and every model shipped there."""
    from tinyunet.checkpoint import shipped_models
    (tmp_path / "my-model.npz").write_bytes(b"")
    (tmp_path / "my-model.json").write_text("{}")
    assert shipped_models(tmp_path) == {"isbi2012": tmp_path / "isbi2012.npz",
                                        "my-model": tmp_path / "my-model.npz"}
    assert set(SHIPPED) == set(shipped_models())


def test_an_unknown_or_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    from tinyunet.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="no-such.npz"):
        load_model(tmp_path / "no-such.npz")
    monkeypatch.setitem(SHIPPED, "isbi2012", tmp_path / "gone.npz")   # an installation without it
    with pytest.raises(CheckpointError, match="'isbi2012' is not in this installation"):
        load_model("isbi2012")


def test_the_isbi_model_ships_with_its_provenance():
    model, meta = load_model("isbi2012")
    assert SHIPPED["isbi2012"].stat().st_size < 10 * 2**20          # a few MB
    prov = meta["provenance"]
    assert prov == json.loads(SHIPPED_JSON.read_text())
    assert prov["steps"] == meta["step"] == meta["train_config"]["steps"]
    assert prov["command"].startswith("python examples/train_isbi.py --data isbi --preset cpu")
    assert len(prov["commit"]) == 40
    for kind in ("plain", "tta"):
        assert 0 < prov["scores_last"][kind]["rand_error"] < 1
    assert (model.config["base_channels"], model.depth) == (16, 4)
    assert all(v.dtype == np.float32 for v in model.params.values())


def test_the_isbi_model_scores_the_slices_it_never_saw_as_its_provenance_says(isbi_dir):
    from tinyunet import metrics
    from tinyunet.data import load_stack, normalise
    from tinyunet.infer import predict_tiled
    model, meta = load_model("isbi2012")
    prov = meta["provenance"]
    assert prov["data"]["val_slices"] == "25-29" and prov["data"]["train_slices"] == "0-24"
    images = load_stack(isbi_dir / "train-volume.tif")[25:30]
    truth = load_stack(isbi_dir / "train-labels.tif")[25:30] > 127
    probs = np.stack([predict_tiled(model, x, tile=380, channel=1)
                      for x in normalise(images, meta["mean"], meta["std"])])
    got = metrics.evaluate(probs, truth, topology=False)
    for k in ("pixel_error", "rand_error", "iou"):                  # the float32 file is the run
        assert abs(got[k] - prov["scores_last"]["plain"][k]) < 1e-4, (k, got[k])


def test_predict_with_the_shipped_model_writes_into_the_working_folder(tmp_path, monkeypatch):
    import tifffile
    from tinyunet.commands import predict
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "em.tif", rng.integers(0, 256, (200, 200), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    predict.main(["--model", "isbi2012", "em.tif", "--tile", "380"])
    prob = tifffile.imread(tmp_path / "predictions" / "em_prob.tif")
    assert prob.squeeze().shape == (200, 200) and 0 <= prob.min() and prob.max() <= 1
    assert (tmp_path / "predictions" / "em_overlay.png").exists()


def test_a_shipped_model_keeps_its_runs_data_border_and_min_cell(tmp_path, capsys, monkeypatch):
    """A shipped model keeps its run's data source, border and min_cell for export and predict;
    its card says how cells are made and, for a GT+ST run, what it was scored on."""
    import tifffile
    from tinyunet import export
    from tinyunet.checkpoint import trained_on
    from tinyunet.commands import predict
    from tinyunet.commands import ship as command
    from tinyunet.instances import label_cells
    from tinyunet.train import Trainer, final_report

    from .conftest import run_example, small_config
    # touching squares as cells: instance labels (ids 1-4), bright cells on a dark ground
    rng = np.random.default_rng(0)
    labels = np.zeros((3, 48, 48), np.int32)
    for k, (r, c) in enumerate([(4, 4), (4, 20), (26, 12), (28, 30)]):
        labels[:, r:r + 14, c:c + 15] = k + 1
    images = np.clip(60 + 120 * (labels > 0) + rng.normal(0, 10, labels.shape), 0, 255)
    images = images.astype(np.uint8)
    source = "/data/ctc/DIC-C2DH-HeLa"                  # as data.selection records a folder
    cfg = small_config(steps=2, val_every=2, labels="instances", border=1, min_cell=7, ema=0.5,
                       data=dict(source=source, labels="instances", silver=True,
                                val_slices="36-57"))
    trainer = Trainer(cfg, (images[:2], labels[:2]), (images[2:], labels[2:]), tmp_path / "run",
                      progress=False)
    trainer.run()
    final_report(trainer, "cpu")
    code, _, err = run_example(command.main, [tmp_path / "run", "--name", "cells", "--out",
                                              tmp_path / "models"], capsys)
    assert code == 0, err
    shipped = tmp_path / "models" / "cells.npz"          # no config.json beside it
    card = json.loads(shipped.with_suffix(".json").read_text())
    assert card["data"]["set"] == "DIC-C2DH-HeLa" and card["data"]["silver"] is True
    assert card["scored_on"].startswith("the fully annotated reference frames among slices "
                                        "36-57, a block of frames held out of training")
    assert card["instances"] == dict(function="tinyunet.instances.label_cells", threshold=0.5,
                                     connectivity=4, min_cell=7, border=1)
    _, meta = load_model(shipped)
    recipe = meta["train_config"]
    assert (recipe["labels"], recipe["border"], recipe["min_cell"]) == ("instances", 1, 7)
    # export reads the data source from the shipped file alone
    assert trained_on(meta, shipped) == source
    assert export.known_training_data(meta)["name"] == "Cell Tracking Challenge"
    # predict --instances labels the cells with the run's border and min_cell
    calls = []

    def spy(prob, threshold, grow, min_pixels):
        calls.append((threshold, grow, min_pixels))
        return label_cells(prob, threshold, grow, min_pixels)
    monkeypatch.setattr(predict, "label_cells", spy)
    tifffile.imwrite(tmp_path / "frame.tif", images[2])
    code, _, err = run_example(predict.main, [shipped, tmp_path / "frame.tif", "--instances",
                                              "--out", tmp_path / "pred"], capsys)
    assert code == 0, err
    assert calls == [(0.5, 1, 7)]
    assert tifffile.imread(tmp_path / "pred" / "frame_labels.tif").shape == (48, 48)


def test_ship_threshold_silver_chooses_on_the_unannotated_block_and_rescores(tmp_path, capsys,
                                                                            monkeypatch):
    """ship --threshold silver: the threshold of P(cell) with the best SEG on the silver truth
    of the held-out block's frames without a reference mask; the card's scores are the block's
    reference frames' at it (the run's own kept), and predict --instances uses it. A shipped
    model re-ships at a given threshold; a bad threshold, a membrane model or a run without the
    silver truth is one line."""
    import tifffile
    from tinyunet import metrics
    from tinyunet.commands import predict
    from tinyunet.commands import ship as command
    from tinyunet.data import normalise
    from tinyunet.data.ctc import load_ctc
    from tinyunet.infer import predict_tiled
    from tinyunet.instances import cell_options, label_cells
    from tinyunet.train import Trainer, final_report

    from .conftest import error_line, run_example, small_config, small_trainer
    from .test_cells import write_set
    folder = write_set(tmp_path / "set", frames=range(12), partial=(8,))
    for t in range(1, 12, 2):                        # odd frames: silver truth only
        (folder / "01_GT" / "SEG" / f"man_seg{t:03d}.tif").unlink()
    frames = load_ctc(folder, silver=True)
    cfg = small_config(steps=4, val_every=4, labels="instances", border=1, min_cell=7,
                       data=dict(source=str(folder), labels="instances", silver=True,
                                 train_slices="0-5", val_slices="6-11"))
    trainer = Trainer(cfg, (frames.images[:6], frames.instances[:6]),
                      (frames.images[[6, 10]], frames.instances[[6, 10]]), tmp_path / "run",
                      progress=False)
    trainer.run()
    final_report(trainer, "cpu")
    models = tmp_path / "models"
    code, out, err = run_example(command.main, [tmp_path / "run", "--name", "cells", "--out",
                                                models, "--threshold", "silver"], capsys)
    assert code == 0, err
    card = json.loads((models / "cells.json").read_text())
    chose = card["instances"]["chosen_on"]
    assert chose["frames"] == ["01/t007", "01/t009", "01/t011"]    # never trained on, no reference
    by_t = {float(t): s for t, s in chose["seg_by_threshold"].items()}
    assert set(by_t) == set(command.THRESHOLDS)
    assert card["instances"]["threshold"] == max(by_t, key=by_t.get)
    assert card["run_scores"]["threshold"] == 0.5 and card["run_scores"]["last"]["step"] == 4
    assert "scores_best" not in card and "SEG on the silver truth" in out
    model, meta = load_model(models / "cells.npz")
    assert meta["provenance"] == card
    border, min_cell, threshold = cell_options(meta)
    assert (border, min_cell, threshold) == (1, 7, card["instances"]["threshold"])
    cells = np.stack([label_cells(predict_tiled(model, x, tile=92, channel=1), threshold, 1, 7)
                      for x in normalise(frames.images[[6, 10]], meta["mean"], meta["std"])])
    got = metrics.seg(cells, frames.instances[[6, 10]])["seg"]    # frame 8 is partial
    assert abs(got - card["scores_last"]["plain"]["seg"]) < 1e-4
    calls = []
    monkeypatch.setattr(predict, "label_cells", lambda p, t, g, m: calls.append(t) or
                        label_cells(p, t, g, m))
    tifffile.imwrite(tmp_path / "frame.tif", frames.images[7])
    code, _, err = run_example(predict.main, [models / "cells.npz", tmp_path / "frame.tif",
                                              "--instances", "--out", tmp_path / "pred"], capsys)
    assert code == 0 and calls == [threshold], err
    # a shipped model, re-shipped at a threshold given: its card carried over, the run's kept
    argv = [models / "cells.npz", "--name", "cells", "--out", models, "--threshold", "0.8"]
    assert "exists: --overwrite" in error_line(command.main, argv, capsys)
    code, _, err = run_example(command.main, argv + ["--overwrite"], capsys)
    assert code == 0, err
    again = json.loads((models / "cells.json").read_text())
    assert again["instances"]["threshold"] == 0.8 and "chosen_on" not in again["instances"]
    assert again["run_scores"] == card["run_scores"] and again["command"] == card["command"]
    assert cell_options(load_model(models / "cells.npz")[1])[2] == 0.8
    assert "give a threshold in (0, 1)" in error_line(command.main, argv[:-1] + ["1.5"], capsys)
    # the frames to score are read again: a folder that is missing or holds no set is one line
    for where, says in ((tmp_path / "nowhere", "no such folder"),
                        (tmp_path / "models", "holds no reference segmentations")):
        line = error_line(command.main, argv + ["--overwrite", "--data", where], capsys)
        assert says in line and "--data gives the set's folder" in line, line
    assert json.loads((models / "cells.json").read_text()) == again     # nothing overwritten
    # a model of membranes makes no cells; a run without the silver truth held no block out
    membranes = small_trainer(tmp_path / "em", steps=2)
    membranes.run()
    final_report(membranes, "cpu")
    assert "not on instance masks" in error_line(
        command.main, [tmp_path / "em", "--name", "em", "--out", models, "--threshold", "0.5"],
        capsys)
    no_st = Trainer(small_config(steps=2, val_every=2, labels="instances",
                                 data=dict(source=str(folder), labels="instances",
                                           val_slices="6-11")),
                    (frames.images[:6], frames.instances[:6]),
                    (frames.images[[6]], frames.instances[[6]]), tmp_path / "plain",
                    progress=False)
    no_st.run()
    final_report(no_st, "cpu")
    assert "trained without the silver truth" in error_line(
        command.main, [tmp_path / "plain", "--name", "p", "--out", models, "--threshold",
                       "silver"], capsys)


@pytest.mark.parametrize("name, set_name", CELL_MODELS.items())
def test_the_cell_models_ship_with_their_provenance(name, set_name):
    from tinyunet.instances import recipe
    model, meta = load_model(name)
    prov = meta["provenance"]
    assert prov == json.loads(SHIPPED[name].with_suffix(".json").read_text())
    assert prov["command"].startswith(f"python examples/train_isbi.py --data ../shared/data/ctc/"
                                      f"{set_name} --silver")
    assert prov["data"]["set"] == set_name and prov["data"]["silver"] is True
    assert prov["steps"] == meta["step"] == meta["train_config"]["steps"]
    assert len(prov["commit"]) == 40 and prov["recipe"] == "--preset cells"
    assert {k: prov["instances"][k] for k in recipe(meta)} == recipe(meta)   # predict's cells
    own = prov.get("run_scores", {}).get("threshold", prov["instances"]["threshold"])
    assert own == meta["train_config"]["threshold"]         # the run's, where the card changed it
    assert 0 < prov["scores_last"]["plain"]["seg"] <= 1
    assert all(v.dtype == np.float32 for v in model.params.values())


@pytest.mark.parametrize("name, set_name", CELL_MODELS.items())
def test_a_cell_model_scores_the_frames_it_never_saw_as_its_provenance_says(name, set_name,
                                                                           ctc_dir):
    """The reference frames of the block held out of training, segmented with the model's own
    rule (cell_options), score SEG as the run validated them."""
    from tinyunet import metrics
    from tinyunet.data import normalise
    from tinyunet.data.ctc import load_ctc
    from tinyunet.data.selection import parse_slices
    from tinyunet.infer import predict_tiled
    from tinyunet.instances import cell_options, label_cells
    model, meta = load_model(name)
    prov = meta["provenance"]
    images, inst, names, partial, silver = load_ctc(ctc_dir / set_name, silver=True)
    val = [i for i in parse_slices(prov["data"]["val_slices"], len(images))
           if not silver[i] and not partial[i]]
    trained = parse_slices(prov["data"]["train_slices"], len(images))
    assert val and not set(val) & set(trained)
    border, min_cell, threshold = cell_options(meta)
    cells = np.stack([label_cells(predict_tiled(model, x, tile=meta["train_config"]["tile"],
                                                channel=1), threshold, border, min_cell)
                      for x in normalise(images[val], meta["mean"], meta["std"])])
    got = metrics.seg(cells, inst[val])["seg"]
    assert abs(got - prov["scores_last"]["plain"]["seg"]) < 1e-4, got


@pytest.mark.parametrize("name", CELL_MODELS)
def test_predict_instances_with_a_cell_model_writes_labels_per_frame(name, tmp_path,
                                                                     monkeypatch):
    """predict --model NAME frames/ --instances: one <frame>_labels.tif per frame, in place of
    the probabilities."""
    import tifffile
    from tinyunet.commands import predict
    rng = np.random.default_rng(0)
    (tmp_path / "frames").mkdir()
    for t in ("t000", "t001"):
        tifffile.imwrite(tmp_path / "frames" / f"{t}.tif",
                         rng.integers(0, 256, (120, 150), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    predict.main(["--model", name, "frames", "--instances"])
    for t in ("t000", "t001"):
        labels = tifffile.imread(tmp_path / "predictions" / f"{t}_labels.tif")
        assert labels.shape == (120, 150) and np.issubdtype(labels.dtype, np.integer)
    assert not list((tmp_path / "predictions").glob("*_prob.tif"))
