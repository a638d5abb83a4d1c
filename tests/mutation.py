"""Mutation testing, run by hand: how many deliberately broken copies of a module the tests catch.

    python tests/mutation.py tinyunet/metrics            # one module (or package) and its tests
    python tests/mutation.py all                         # every module of MODULES, one by one
    python tests/mutation.py tinyunet/optim.py --tests tests/test_train.py
    python tests/mutation.py tinyunet/export.py --sample 100    # 100 mutants drawn at random

mutmut (3.x, `pip install mutmut`) makes many small changes to the module's code (`<` to `<=`,
`+ 1` to `+ 2`, a string, a default argument, a deleted call) and runs, for each, the tests that
execute the function it changed; a mutant that no test notices *survives*. A survivor is a
behaviour the tests do not pin down, or an equivalent change (one that cannot alter what the code
does: a message's wording the tests do not read, `x * 1.0` for `x`, a default that every caller
overrides). Read CONTRIBUTING.md ("Mutation testing") for how to read them.

Each module runs in its own copy of the checkout (build/mutation/<module>/: the tracked and
untracked files that git does not ignore), so mutmut's `mutants/` folder never touches the
working tree, with its own `[tool.mutmut]` section naming the module and the test files that
cover it. The Numba kernels are not mutated (a mutant of a compiled kernel changes nothing until
it is recompiled, and the kernels have their own oracle tests). Written there: `summary.json`
(counts and the score) and `survivors.md` (each survivor's diff); the score is
(killed + timed out) / the mutants run (all of them, unless --minutes stopped the module first:
those not run are 'not checked'), and the table is printed at the end. mutmut runs the mutants
whose tests are fastest first, so a run cut short by --minutes leans to the cheap ones; --sample
draws the mutants uniformly instead, and its score estimates the whole module's (with a standard
error), the way to score a module of a thousand mutants in minutes.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module (a file, or a package's folder) -> the test files that exercise it: the fewer and faster,
# the shorter the run (mutmut runs, per mutant, only those of these tests that reach the function)
MODULES = {
    "tinyunet/metrics": ["tests/test_metrics.py", "tests/test_isbi_conventions.py",
                         "tests/test_cells.py", "tests/test_cell_metrics_rules.py",
                         "tests/test_evaluate_cli.py", "tests/test_warping.py"],
    "tinyunet/data": ["tests/test_data.py", "tests/test_data_rules.py", "tests/test_cells.py",
                      "tests/test_robust.py"],
    "tinyunet/optim.py": ["tests/test_model.py", "tests/test_gpu_route.py", "tests/test_train.py",
                          "tests/test_checkpoint.py", "tests/test_robust.py"],
    "tinyunet/checkpoint.py": ["tests/test_checkpoint.py", "tests/test_robust.py",
                               "tests/test_shipped.py", "tests/test_train.py",
                               "tests/test_init.py"],
    "tinyunet/config.py": ["tests/test_config.py", "tests/test_plots.py", "tests/test_train.py",
                           "tests/test_robust.py", "tests/test_cells.py"],
    "tinyunet/export.py": ["tests/test_export.py", "tests/test_shipped.py"],
    "tinyunet/infer.py": ["tests/test_infer.py", "tests/test_properties.py",
                          "tests/test_predict_cli.py", "tests/test_volume.py"],
    "tinyunet/train.py": ["tests/test_train.py", "tests/test_robust.py", "tests/test_cells.py",
                          "tests/test_gpu_route.py", "tests/test_init.py"],
}

DETECTED = {"killed", "timeout", "suspicious"}       # suspicious: slower than the clean run, killed


def checkout_files():
    """The checkout's files that git knows or would add: tracked, and untracked but not ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def mutmut_section(module, tests):
    glob = f"{module}/*" if not module.endswith(".py") else module
    lines = ["", "[tool.mutmut]", 'source_paths = ["tinyunet"]', f'only_mutate = ["{glob}"]',
             "pytest_add_cli_args_test_selection = [" + ", ".join(f'"{t}"' for t in tests) + "]",
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
             # a mutant that makes a test hang (a loop that never ends, a lock never freed) is
             # stopped at 3x the clean run's time and counts as caught, as mutmut's timeouts do
             "timeout_multiplier = 3.0",
             # each mutant from a fresh server process, not from mutmut's own (which has run
             # the suite once, Numba's and the kernels' threads included: a fork of it hangs)
             'process_isolation = "forkserver"', ""]
    return "\n".join(lines)


def run_module(module, tests, out, max_children, minutes=None, sample=None, seed=0):
    work = out / module.replace("/", "_").removesuffix(".py")
    if work.exists():
        shutil.rmtree(work)
    for rel in checkout_files():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, work / rel)
    pyproject = work / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "", pyproject.read_text(), flags=re.S)
    pyproject.write_text(text + mutmut_section(module, [t for t in tests if (ROOT / t).exists()]))
    env = dict(os.environ)
    # the copy is not where the shared data are found from: name them (see data.shared_data_dir)
    sys.path.insert(0, str(ROOT))
    from tinyunet.data.images import shared_data_dir
    env.setdefault("TINYUNET_DATA_DIR", str(shared_data_dir("ctc").parent))
    mutmut = [sys.executable, "-m", "mutmut"]

    def listing():
        out = subprocess.run(mutmut + ["results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True).stdout
        return dict(re.findall(r"^\s*(\S+): (\S+.*?)\s*$", out, re.M))

    names = []
    if sample is not None:
        # mutmut makes every mutant (and measures which tests reach which function) before it
        # filters by name: a name that matches none stops it there, with all of them listed
        subprocess.run(mutmut + ["run", "--max-children", str(max_children), "no-such-mutant"],
                       cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        every = sorted(listing())
        if not every:
            sys.exit(f"error: mutmut made no mutants of {module} (see {work})")
        names = sorted(random.Random(seed).sample(every, min(sample, len(every))))
    run = subprocess.Popen(mutmut + ["run", "--max-children", str(max_children)] + names,
                           cwd=work, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        run.wait(timeout=None if minutes is None else 60 * minutes)
    except subprocess.TimeoutExpired:         # stopped: the mutants not run yet stay unchecked
        os.killpg(run.pid, signal.SIGTERM)
        run.wait()
    status = listing()
    total = len(status)
    if names:                                           # the sample's mutants, not the others
        status = {n: status[n] for n in names}
    counts = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = sorted(n for n, s in status.items() if s == "survived")
    with open(work / "survivors.md", "w") as f:
        for name in survivors:
            diff = subprocess.run(mutmut + ["show", name], cwd=work, env=env,
                                  capture_output=True, text=True).stdout
            f.write(f"```diff\n{diff.strip()}\n```\n\n")
    detected = sum(n for s, n in counts.items() if s in DETECTED)
    checked = len(status) - counts.get("not checked", 0)
    score = detected / checked if checked else None
    summary = {"module": module, "tests": tests, "mutants": total, "counts": counts,
               "score": score}
    if names:
        # a uniform random sample estimates the whole module's score, to within this (one
        # binomial standard error)
        summary.update(sample=len(names), seed=seed, score_error=(
            math.sqrt(score * (1 - score) / checked) if checked else None))
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary, work


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", help="a module or package under tinyunet/ (as in MODULES), or 'all'")
    p.add_argument("--tests", nargs="+", help="the test files (default: MODULES' for the module)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "mutation")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 1,
                   help="mutants run side by side (default: the CPU count)")
    p.add_argument("--sample", type=int,
                   help="run only this many of each module's mutants, drawn at random (the "
                        "score of a large module in minutes, with its standard error)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    p.add_argument("--minutes", type=float,
                   help="stop each module after this long: the mutants not run by then are "
                        "counted as 'not checked' and left out of the score")
    args = p.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        sys.exit("error: mutation testing needs mutmut 3.x: pip install 'mutmut>=3,<4'")
    modules = list(MODULES) if args.module == "all" else [args.module.rstrip("/")]
    for m in modules:
        if not (ROOT / m).exists():
            sys.exit(f"error: no module {m} in {ROOT}; known: {', '.join(MODULES)}")
        if args.tests is None and m not in MODULES:
            sys.exit(f"error: no test files known for {m}: give them with --tests")
    rows = []
    for m in modules:
        summary, work = run_module(m, args.tests or MODULES[m], args.out, args.max_children,
                                   args.minutes, args.sample, args.seed)
        c = summary["counts"]
        score = "-" if summary["score"] is None else f"{summary['score']:.1%}"
        if summary.get("score_error") is not None:
            score += f" ± {summary['score_error']:.1%}"
        run = summary["mutants"] if "sample" not in summary else \
            f"{summary['sample']} of {summary['mutants']}"
        rows.append(f"| {m} | {run} | {c.get('killed', 0)} | "
                    f"{c.get('timeout', 0) + c.get('suspicious', 0)} | {c.get('survived', 0)} | "
                    f"{c.get('no tests', 0)} | {c.get('not checked', 0)} | "
                    + score + f" | {work.relative_to(ROOT) if work.is_relative_to(ROOT) else work}"
                    "/survivors.md |")
        print(rows[-1], flush=True)
    print("\n| module | mutants | killed | timed out | survived | no tests | not checked | score "
          "| survivors |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
