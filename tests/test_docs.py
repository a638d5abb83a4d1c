"""Every ```python block of every page in docs/ runs, in order, at its small size and seed."""
import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_spec = importlib.util.spec_from_file_location("run_docs", DOCS / "run_docs.py")
run_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_docs)

PAGES = sorted(p for p in DOCS.glob("*.md") if run_docs.code_blocks(p))


def test_every_tutorial_has_code():
    tutorials = [p for p in DOCS.glob("*.md") if p.name != "index.md"]
    assert tutorials and all(run_docs.code_blocks(p) for p in tutorials)


# pages that need an optional extra run where it is installed (the dev extra, and so CI, has it)
NEEDS = {"12-volumes.md": ("dask", "zarr")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_page_runs(page, tmp_path):
    for module in NEEDS.get(page.name, ()):
        pytest.importorskip(module, reason=f"{page.name} needs the 'volume' extra")
    run_docs.run_page(page, tmp_path)


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for p in DOCS.glob("*.md"):
        if p.name != "index.md":
            assert f"({p.name})" in index, f"docs/index.md does not link {p.name}"


def _page(tmp_path, body):
    page = tmp_path / "page.md"
    page.write_text("# a page\n\n" + body)
    return page


def test_a_block_marked_raises_fails_when_no_error_comes(tmp_path):
    quiet = _page(tmp_path, "```python raises=ValueError\nx = int('3')\n```\n")
    with pytest.raises(AssertionError, match=r"page.md:3: .*raises=ValueError.*raised nothing"):
        run_docs.run_page(quiet, tmp_path)
    other = _page(tmp_path, "```python raises=ValueError\n{}['key']\n```\n")
    with pytest.raises(KeyError):                   # another error is not the one promised
        run_docs.run_page(other, tmp_path)


def test_a_block_marked_raises_checks_the_message_it_shows(tmp_path, capsys):
    good = "```python raises=ValueError\nint('x')\n# ValueError: invalid literal ... 'x'\n```\n"
    run_docs.run_page(_page(tmp_path, good), tmp_path)
    assert "ValueError: invalid literal for int() with base 10: 'x'" in capsys.readouterr().out
    stale = "```python raises=ValueError\nint('x')\n# ValueError: labels must be ...\n```\n"
    with pytest.raises(AssertionError, match="shows the message"):
        run_docs.run_page(_page(tmp_path, stale), tmp_path)


def test_pages_show_errors_with_raises_blocks():
    """`try: ... except E as e: print(e)` passes silently when nothing is raised: not in docs/."""
    for page in PAGES:
        for block in run_docs.code_blocks(page):
            assert "as e:" not in block.source, (f"{page.name}:{block.line}: show an error with a "
                                                 f"```python raises=... block (see run_docs.py)")
