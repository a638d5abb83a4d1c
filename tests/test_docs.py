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


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_page_runs(page, tmp_path):
    run_docs.run_page(page, tmp_path)


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for p in DOCS.glob("*.md"):
        if p.name != "index.md":
            assert f"({p.name})" in index, f"docs/index.md does not link {p.name}"
