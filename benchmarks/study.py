"""Running a study: training commands, two at a time, each resumable (laptop_study.py and
cells_study.py use it).

Each run is one `examples/train_isbi.py` command whose run directory lives in runs/study/<name>/
(git-ignored: checkpoints stay out of git), its output in train.log beside it. A finished run
(final_metrics.json) is skipped, an unfinished one resumes. A finished run's logs (config.json,
log.jsonl, final_metrics.json, train.log; no checkpoint) are kept in results/runs/<name>/, which
git tracks: the tables and the figures drawn from logs are remade from there where runs/ is
gone. --jobs 2 runs two commands at once, one thread each: on 2 cores that has 1.35x the
throughput of one run on two threads.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinyunet.data.ctc import default_ctc_dir

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "study"
CTC_DIR = default_ctc_dir()                             # the cell tracking challenge's sets
RESULTS = ROOT / "benchmarks" / "results"
LOGS = RESULTS / "runs"                                 # the finished runs' logs, tracked by git
KEPT = ("config.json", "log.jsonl", "final_metrics.json")


def run_dir_of(name, logs=True):
    """The run directory of a study run: the one folder train_isbi.py made in OUT/name; where
    there is none and logs=True, its kept logs in results/runs/<name> (no checkpoints)."""
    made = sorted(p.parent for p in (OUT / name).glob("*/config.json"))
    if made:
        return made[-1]
    return LOGS / name if logs and (LOGS / name / "config.json").exists() else None


def keep_logs(name, run):
    """Copy a finished run's logs (KEPT and its train.log) from runs/ into results/runs/<name>."""
    if not (run / "final_metrics.json").exists():
        return
    (LOGS / name).mkdir(parents=True, exist_ok=True)
    for f in KEPT:
        (LOGS / name / f).write_bytes((run / f).read_bytes())
    if (OUT / name / "train.log").exists():
        (LOGS / name / "train.log").write_text((OUT / name / "train.log").read_text()
                                               .replace(str(ROOT) + "/", ""))


def run_one(name, argv, threads):
    """Start (or resume) one run; returns (name, what happened)."""
    out = OUT / name
    run_dir = run_dir_of(name, logs=False)
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
        keep_logs(name, run_dir_of(name, logs=False))
    return name, f"exit {rc} after {(time.time() - t0) / 60:.1f} min"


def run_all(runs, jobs, threads=None):
    """Run {name: argv} `jobs` at a time (threads each: cores / jobs unless given), in order."""
    threads = threads or max(1, (os.cpu_count() or 2) // jobs)
    with ThreadPoolExecutor(jobs) as pool:
        for name, status in pool.map(lambda kv: run_one(*kv, threads), runs.items()):
            print(f"{name}: {status}", flush=True)


def finished(runs):
    """(name, argv, run directory, config, minutes, final_metrics) of the finished runs of
    {name: argv}, in order."""
    for name, argv in runs.items():
        run = run_dir_of(name)
        if run is None or not (run / "final_metrics.json").exists():
            continue
        yield (name, argv, run, json.loads((run / "config.json").read_text()), run_minutes(run),
               json.loads((run / "final_metrics.json").read_text()))


def run_minutes(run):
    """A run's training time in minutes, from its log (NaN where it logged none)."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return max((r["seconds"] for r in log if "seconds" in r), default=float("nan")) / 60


def write_table(name, head, rows):
    """A Markdown table into results/<name>.md, printed too (none of its runs finished here:
    the committed table is kept)."""
    if not rows:
        print(f"no finished runs of {name} in {OUT}: {RESULTS / (name + '.md')} is kept")
        return
    text = head + "\n" + "\n".join(rows) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def cli(doc, groups, commands, table, shown_prefix=""):
    """A study's command line: GROUP [--jobs N] [--threads N] [--list] [--table]."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("group", nargs="?", default=groups[0], choices=list(groups))
    ap.add_argument("--only", nargs="*", help="run only these names (e.g. short/adam)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (threads each: cores/jobs)")
    ap.add_argument("--threads", type=int, help="threads per run (default: cores / jobs)")
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    ap.add_argument("--table", action="store_true", help="write the results table and stop")
    args = ap.parse_args()
    if args.table:
        for name in commands("all"):
            run = run_dir_of(name, logs=False)
            if run is not None:
                keep_logs(name, run)
        return table()
    runs = commands(args.group)
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only}
    if args.list:
        for name, argv in runs.items():
            print(f"{name}: python examples/train_isbi.py {shown_prefix}{' '.join(argv)}")
        return
    run_all(runs, args.jobs, args.threads)
