"""Run the ```python blocks of the tutorial pages, in order, one namespace per page.

    python docs/run_docs.py              # all pages, from docs/: (re)writes docs/figures/*.png
    python docs/run_docs.py 01-convolution.md

The test suite (tests/test_docs.py) runs the same function in a temporary folder, so every code
block in docs/ is executed on every CI run.
"""
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def code_blocks(page):
    """[(line number, source)] of the page's ```python blocks."""
    text = Path(page).read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1)) for m in FENCE.finditer(text)]


def run_page(page, workdir):
    """Execute the blocks of `page` with `workdir` as the current folder (figures/ made there)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    old = os.getcwd()
    Path(workdir, "figures").mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    namespace = {"__name__": "__docs__"}
    try:
        for line, src in code_blocks(page):
            exec(compile(src, f"{Path(page).name}:{line}", "exec"), namespace)
    finally:
        plt.close("all")
        os.chdir(old)


if __name__ == "__main__":
    pages = [DOCS / p for p in sys.argv[1:]] or sorted(DOCS.glob("*.md"))
    for page in pages:
        print(f"running {page.name}")
        run_page(page, DOCS)
