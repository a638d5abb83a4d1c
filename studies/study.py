"""Running a study: training commands, two at a time, each resumable; the finished runs' logs
kept in git; results tables that gain rows and never lose them. Each study's run.py uses it.

    study = Study(Path(__file__).parent)       # the study's folder: studies/<name>/
    study.cli(__doc__, groups, commands, table)

Each run is one `examples/train_isbi.py` command whose run directory lives in
runs/study/<name>/ (git-ignored: checkpoints stay out of git), its output in train.log beside
it. A finished run (final_metrics.json) is skipped, an unfinished one resumes. A finished run's
logs (config.json, log.jsonl, final_metrics.json, train.log; no checkpoint) are kept in the
study's runs/<name>/, which git tracks: tables and the figures drawn from logs are remade from
there where runs/ is gone. --jobs 2 runs two commands at once, one thread each.

A table (`write_table`) is keyed by its first column, the run's name: a finished run replaces
its own row and adds a new one; the rows of runs that are not on this machine stay as they are.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinyunet.data.ctc import default_ctc_dir
from tinyunet.files import atomic_write
from tinyunet.rundir import run_minutes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "study"                           # run directories (git-ignored)
CTC_DIR = default_ctc_dir()                             # the cell tracking challenge's sets
KEPT = ("config.json", "log.jsonl", "final_metrics.json")


RULE = re.compile(r"^\|[\s:|-]+\|$")                        # a table's |---|---| line


def merge_rows(text, head, rows, key_columns=(0,)):
    """A Markdown table: `head` (its header and rule lines), then the rows of `text` (an earlier
    table, or ""; whatever comes before its rule line is its header, not rows) with each row of
    `rows` in place of the one with the same key (its first column, the run's name, or the
    columns `key_columns`), new keys appended in the order given. Of rows with one key, the
    last given wins; an earlier table's rows are all kept but for those a new row replaces."""
    def key(line):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        return tuple(cells[k] for k in key_columns)
    lines = text.splitlines()
    rule = next((i for i, ln in enumerate(lines) if RULE.match(ln.strip())), -1)
    old = [ln for ln in lines[rule + 1:] if ln.startswith("|")]
    new = {}
    for r in rows:
        new[key(r)] = r
    merged, placed = [], set()
    for r in old:
        k = key(r)
        if k not in new:
            merged.append(r)
        elif k not in placed:
            merged.append(new[k])
            placed.add(k)
    merged += [r for k, r in new.items() if k not in placed]
    return head + "\n" + "\n".join(merged) + "\n"


class Study:
    """A study's folder: its kept logs in runs/, its tables beside its README."""

    def __init__(self, home):
        self.home = Path(home)
        self.logs = self.home / "runs"

    def run_dir_of(self, name, logs=True):
        """The run directory of a study run: the one folder train_isbi.py made in OUT/name;
        where there is none and logs=True, its kept logs in runs/<name> (no checkpoints)."""
        made = sorted(p.parent for p in (OUT / name).glob("*/config.json"))
        if made:
            return made[-1]
        kept = self.logs / name
        return kept if logs and (kept / "config.json").exists() else None

    def keep_logs(self, name, run):
        """Copy a finished run's logs (KEPT and its train.log) from runs/ into runs/<name>."""
        if not (run / "final_metrics.json").exists() or run == self.logs / name:
            return
        (self.logs / name).mkdir(parents=True, exist_ok=True)
        for f in KEPT:
            (self.logs / name / f).write_bytes((run / f).read_bytes())
        if (OUT / name / "train.log").exists():
            (self.logs / name / "train.log").write_text(
                (OUT / name / "train.log").read_text().replace(str(ROOT) + "/", "")
                .replace(str(ROOT.parent / "shared") + "/", "../shared/"))

    def run_one(self, name, argv, threads):
        """Start (or resume) one run; returns (name, what happened)."""
        out = OUT / name
        run_dir = self.run_dir_of(name, logs=False)
        if run_dir and (run_dir / "final_metrics.json").exists():
            return name, "done before"
        out.mkdir(parents=True, exist_ok=True)
        base = [sys.executable, str(ROOT / "examples" / "train_isbi.py")]
        if run_dir and (run_dir / "latest.npz").exists():
            cmd = base + ["--resume", str(run_dir)]
        else:
            cmd = base + list(argv) + ["--out", str(out)]
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        t0 = time.time()
        with open(out / "train.log", "a") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if rc == 0:
            self.keep_logs(name, self.run_dir_of(name, logs=False))
        return name, f"exit {rc} after {(time.time() - t0) / 60:.1f} min"

    def run_all(self, runs, jobs, threads=None):
        """Run {name: argv} `jobs` at a time (threads each: cores / jobs unless given)."""
        threads = threads or max(1, (os.cpu_count() or 2) // jobs)
        with ThreadPoolExecutor(jobs) as pool:
            for name, status in pool.map(lambda kv: self.run_one(*kv, threads), runs.items()):
                print(f"{name}: {status}", flush=True)

    def finished(self, runs):
        """(name, argv, run directory, config, minutes, final_metrics) of the finished runs of
        {name: argv}, in order."""
        for name, argv in runs.items():
            run = self.run_dir_of(name)
            if run is None or not (run / "final_metrics.json").exists():
                continue
            yield (name, argv, run, json.loads((run / "config.json").read_text()),
                   run_minutes(run), json.loads((run / "final_metrics.json").read_text()))

    def write_table(self, filename, head, rows, key_columns=(0,)):
        """Merge `rows` into the table `filename` of the study's folder (merge_rows: by run
        name, or by `key_columns`; never losing a row), print it and return its path."""
        path = self.home / filename
        text = merge_rows(path.read_text() if path.exists() else "", head, rows, key_columns)
        atomic_write(path, lambda f: f.write(text.encode()))   # a crash leaves the old table
        print(text)
        return path

    def cli(self, doc, groups, commands, table, shown_prefix=""):
        """A study's command line: GROUP [--jobs N] [--threads N] [--only ...] [--list]
        [--table]."""
        ap = argparse.ArgumentParser(description=doc.split("\n")[0])
        ap.add_argument("group", nargs="?", default=groups[0], choices=list(groups))
        ap.add_argument("--only", nargs="*", help="run only these names (e.g. short/adam)")
        ap.add_argument("--jobs", type=int, default=1, help="runs at once (cores/jobs threads)")
        ap.add_argument("--threads", type=int, help="threads per run (default: cores / jobs)")
        ap.add_argument("--list", action="store_true", help="print the commands and stop")
        ap.add_argument("--table", action="store_true", help="write the results table and stop")
        args = ap.parse_args()
        if args.table:
            for name in commands("all"):
                run = self.run_dir_of(name, logs=False)
                if run is not None:
                    self.keep_logs(name, run)
            return table()
        runs = commands(args.group)
        if args.only:
            runs = {k: v for k, v in runs.items() if k in args.only}
        if args.list:
            for name, argv in runs.items():
                print(f"{name}: python examples/train_isbi.py {shown_prefix}{' '.join(argv)}")
            return
        self.run_all(runs, args.jobs, args.threads)
