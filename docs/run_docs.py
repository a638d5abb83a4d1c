"""Run the ```python blocks of the tutorial pages, in order, one namespace per page.

    python docs/run_docs.py              # all pages, from docs/: (re)writes docs/figures/*.png
    python docs/run_docs.py 01-convolution.md     # and docs/outputs/<page>.json

The test suite (tests/test_docs.py) runs the same function in a temporary folder, so every code
block in docs/ is executed on every CI run. What each block prints is kept in
docs/outputs/<page>.json, which the site shows beneath the block (docs/build_site.py); the test
fails when a page prints other than its file says (numbers to 1e-3: other CPUs round the last
digits otherwise), so that a page's shown output is never stale.

A block that shows an error is fenced as ```python title="raises ValueError" (the site renders
it as a code block titled "raises ValueError"): it must raise that exception, or the page fails.
Its last line may be a comment with the message the reader will see,
`# ValueError: labels must be in [0, 2) ...`; the message raised must equal it, "..." standing
for any text. The error is printed, as Python would. The old marker ```python raises=ValueError
is refused: Python-Markdown does not read it as a code fence, and the page renders broken.
"""
import contextlib
import datetime
import io
import json
import os
import re
import sys
from collections import namedtuple
from pathlib import Path

DOCS = Path(__file__).resolve().parent
OUTPUTS = DOCS / "outputs"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
RAISES = re.compile(r'^\s*title="raises ([A-Za-z_][\w.]*)"\s*$')   # the info string after python

Block = namedtuple("Block", "line source raises")   # raises: an exception name, or None


def code_blocks(page):
    """[Block(line number, source, raises)] of the page's ```python blocks."""
    text = Path(page).read_text()
    blocks = []
    for m in FENCE.finditer(text):
        line, info = text[:m.start()].count("\n") + 1, m.group(1)
        raises = RAISES.match(info)
        if raises is None and "raises" in info:
            raise ValueError(f"{Path(page).name}:{line}: write a block that shows an error as "
                             f"```python title=\"raises ValueError\", not ```python{info}")
        blocks.append(Block(line, m.group(2), raises.group(1) if raises else None))
    return blocks


def _expected_message(block):
    """The message promised by the block's closing `# Name: message` comment, or None."""
    last = block.source.rstrip().splitlines()[-1].strip()
    prefix = f"# {block.raises.rsplit('.', 1)[-1]}: "
    return last[len(prefix):] if last.startswith(prefix) else None


def run_block(block, namespace, where):
    """Execute one block; a `raises=` block must raise that exception (with its message)."""
    code = compile(block.source, where, "exec")
    if block.raises is None:
        exec(code, namespace)
        return
    expected = eval(block.raises, namespace)            # a builtin or a name the page imported
    try:
        exec(code, namespace)
    except expected as e:
        print(f"{type(e).__name__}: {e}")
        message = _expected_message(block)
        if message is not None:
            pattern = ".*".join(re.escape(part) for part in message.split("..."))
            if not re.fullmatch(pattern, str(e), re.S):
                raise AssertionError(f"{where}: the block shows the message\n  {message}\n"
                                     f"but the error says\n  {e}") from e
    else:
        raise AssertionError(f"{where}: the block is marked \"raises {block.raises}\", "
                             f"but it raised nothing")


def run_page(page, workdir):
    """Execute the blocks of `page` with `workdir` as the current folder (figures/ made there);
    returns what each block printed (a list of strings, one per block), having printed it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    old = os.getcwd()
    Path(workdir, "figures").mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    namespace = {"__name__": "__docs__"}
    printed = []
    try:
        for block in code_blocks(page):
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    run_block(block, namespace, f"{Path(page).name}:{block.line}")
            finally:
                printed.append(out.getvalue())
                sys.stdout.write(out.getvalue())
    finally:
        plt.close("all")
        os.chdir(old)
    return printed


def outputs_file(page):
    return OUTPUTS / f"{Path(page).stem}.json"


def shared_data():
    """The shared data sets this machine has ("ctc", "isbi2012"): pages that read them print
    other numbers where they fall back to the built-in synthetic set."""
    from tinyunet.data.ctc import default_ctc_dir
    from tinyunet.data.isbi import default_isbi_dir
    return [name for name, where in (("ctc", default_ctc_dir()), ("isbi2012", default_isbi_dir()))
            if where.exists()]


def write_outputs(page, printed):
    """docs/outputs/<page>.json: what each block printed, the day it was run, and the shared
    data sets that were there."""
    OUTPUTS.mkdir(exist_ok=True)
    outputs_file(page).write_text(json.dumps(dict(
        page=Path(page).name, made=datetime.date.today().isoformat(), shared_data=shared_data(),
        outputs=printed), indent=1) + "\n")


def read_outputs(page):
    """The page's kept outputs: {"page", "made", "shared_data", "outputs"}, or None."""
    path = outputs_file(page)
    return json.loads(path.read_text()) if path.exists() else None


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
INTEGER = re.compile(r"[-+]?\d+")


def same_output(a, b, rtol=1e-3, atol=1e-6):
    """Whether two printed texts say the same: the same words and whole numbers (counts, sizes,
    steps), and the same other numbers to rtol."""
    if NUMBER.split(a) != NUMBER.split(b):
        return False
    x, y = NUMBER.findall(a), NUMBER.findall(b)

    def same(u, v):
        if u == v:
            return True
        if INTEGER.fullmatch(u) and INTEGER.fullmatch(v):
            return False
        return abs(float(u) - float(v)) <= atol + rtol * max(abs(float(u)), abs(float(v)))
    return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))


if __name__ == "__main__":
    sys.path.insert(0, str(DOCS.parent))     # this checkout's tinyunet, not another installed one
    pages = [DOCS / p for p in sys.argv[1:]] or sorted(DOCS.glob("*.md"))
    for page in pages:
        print(f"running {page.name}")
        printed = run_page(page, DOCS)
        if printed:
            write_outputs(page, printed)
