"""The studies' machinery (studies/study.py): a results table gains rows by run name and never
loses one; every study's runner lists its commands."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("study", ROOT / "studies" / "study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)

HEAD = "| run | score |\n|---|---|"


def test_a_table_merges_rows_by_run_name_and_never_loses_one():
    old = HEAD + "\n| a | 1 |\n| b | 2 |\n| c | 3 |\n"
    text = study.merge_rows(old, HEAD, ["| b | 20 |", "| d | 4 |"])
    assert text == HEAD + "\n| a | 1 |\n| b | 20 |\n| c | 3 |\n| d | 4 |\n"
    assert study.merge_rows(text, HEAD, []) == text                 # no run here: kept as is
    assert study.merge_rows("", HEAD, ["| a | 1 |"]) == HEAD + "\n| a | 1 |\n"
    frames = "| run | x | frame |\n|---|---|---|"
    two = study.merge_rows(frames + "\n| r | 1 | f1 |\n| r | 2 | f2 |\n", frames, ["| r | 9 | f2 |"],
                           key_columns=(0, 2))                      # keyed by run and frame
    assert two.splitlines()[2:] == ["| r | 1 | f1 |", "| r | 9 | f2 |"]


def test_a_merge_keeps_a_tables_title_out_of_its_rows_and_one_row_per_new_key():
    old = "Runs of the study\n\n" + HEAD + "\n| a | 1 |\n| a | 1b |\n| b | 2 |\n"
    text = study.merge_rows(old, HEAD, ["| a | 10 |", "| c | 3 |", "| c | 30 |"])
    assert text == HEAD + "\n| a | 10 |\n| b | 2 |\n| c | 30 |\n"     # the last of c given
    bare = "| a | 1 |\n| b | 2 |\n"                                     # no header: all rows
    assert study.merge_rows(bare, HEAD, []) == HEAD + "\n" + bare


def test_write_table_keeps_the_rows_of_runs_that_are_not_here(tmp_path):
    s = study.Study(tmp_path)
    (tmp_path / "results.md").write_text(HEAD + "\n| long/seed-0 | 0.04 |\n")
    s.write_table("results.md", HEAD, ["| short/adam | 0.15 |"])
    assert (tmp_path / "results.md").read_text().splitlines()[2:] == [
        "| long/seed-0 | 0.04 |", "| short/adam | 0.15 |"]


def test_every_study_lists_its_commands():
    for runner in sorted((ROOT / "studies").glob("*/run.py")):
        p = subprocess.run([sys.executable, str(runner), "all", "--list"], capture_output=True,
                           text=True, cwd=ROOT)
        assert p.returncode == 0 and "python examples/train_isbi.py" in p.stdout, (runner,
                                                                                  p.stderr)
