"""Every ```python block of every page in docs/ runs, in order, at its small size and seed."""
import importlib.util
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_spec = importlib.util.spec_from_file_location("run_docs", DOCS / "run_docs.py")
run_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_docs)

PAGES = sorted(p for p in DOCS.glob("*.md") if run_docs.code_blocks(p))


def test_every_tutorial_has_code():
    tutorials = list(DOCS.glob("[0-9][0-9]-*.md"))      # not index.md, nor site.md (the site)
    assert tutorials and all(run_docs.code_blocks(p) for p in tutorials)


# pages that need an optional extra run where it is installed (the dev extra, and so CI, has it)
NEEDS = {"12-volumes.md": ("dask", "zarr")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_page_runs_and_prints_what_its_page_shows(page, tmp_path):
    """Every block runs; what each prints is what docs/outputs/<page>.json keeps (the site shows
    it beneath the block), numbers to 1e-3."""
    for module in NEEDS.get(page.name, ()):
        pytest.importorskip(module, reason=f"{page.name} needs the 'volume' extra")
    printed = run_docs.run_page(page, tmp_path)
    kept = run_docs.read_outputs(page)
    stale = f"docs/outputs/{page.stem}.json is stale: run python docs/run_docs.py {page.name}"
    assert kept is not None and len(kept["outputs"]) == len(printed), stale
    here = run_docs.shared_data()
    for k, (got, want) in enumerate(zip(printed, kept["outputs"])):
        if not run_docs.same_output(got, want) and kept.get("shared_data") != here:
            pytest.skip(f"docs/outputs/{page.stem}.json was made with the shared data "
                        f"{kept.get('shared_data')}, this machine has {here}: the page ran (on "
                        f"the synthetic fallback), its outputs were not compared")
        assert run_docs.same_output(got, want), f"{stale} (block {k + 1}: {got!r} != {want!r})"


def test_outputs_compare_words_exactly_and_numbers_to_a_tolerance():
    assert run_docs.same_output("loss 0.693147, 3 cells\n", "loss 0.6931472, 3 cells\n")
    assert not run_docs.same_output("loss 0.69\n", "loss 0.71\n")
    assert not run_docs.same_output("3 cells\n", "3 cell\n")
    assert not run_docs.same_output("(1, 2)", "(1, 2, 3)")
    assert not run_docs.same_output("step 18000\n", "step 18017\n")     # whole numbers exactly


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text()
    for p in DOCS.glob("*.md"):
        if p.name != "index.md":
            assert f"({p.name})" in index, f"docs/index.md does not link {p.name}"


def _page(tmp_path, body):
    page = tmp_path / "page.md"
    page.write_text("# a page\n\n" + body)
    return page


RAISES = '```python title="raises ValueError"\n'


def test_a_block_marked_raises_fails_when_no_error_comes(tmp_path):
    quiet = _page(tmp_path, RAISES + "x = int('3')\n```\n")
    with pytest.raises(AssertionError, match=r'page.md:3: .*"raises ValueError".*raised nothing'):
        run_docs.run_page(quiet, tmp_path)
    other = _page(tmp_path, RAISES + "{}['key']\n```\n")
    with pytest.raises(KeyError):                   # another error is not the one promised
        run_docs.run_page(other, tmp_path)


def test_a_block_marked_raises_checks_the_message_it_shows(tmp_path, capsys):
    good = RAISES + "int('x')\n# ValueError: invalid literal ... 'x'\n```\n"
    run_docs.run_page(_page(tmp_path, good), tmp_path)
    assert "ValueError: invalid literal for int() with base 10: 'x'" in capsys.readouterr().out
    stale = RAISES + "int('x')\n# ValueError: labels must be ...\n```\n"
    with pytest.raises(AssertionError, match="shows the message"):
        run_docs.run_page(_page(tmp_path, stale), tmp_path)


def test_the_old_raises_marker_is_refused(tmp_path):
    """```python raises=ValueError is no code fence to Python-Markdown: the page would render
    broken (a heading from the comment, fences paired wrongly), so the runner refuses it."""
    for info in (" raises=ValueError", ' title="raises: ValueError"', " title=raises"):
        page = _page(tmp_path, f"```python{info}\nint('x')\n```\n")
        with pytest.raises(ValueError, match=r'page.md:3: write .*title="raises ValueError"'):
            run_docs.code_blocks(page)


def test_the_runner_finds_every_raises_block():
    """Every fence of a page that mentions "raises" is a block the runner checks for its error:
    none silently becomes a plain block (counted against a grep of the pages' fences)."""
    total = 0
    for page in sorted(DOCS.glob("*.md")):
        fences = re.findall(r"^\s*(?:```|~~~)[^\n]*raises", page.read_text(), re.M)
        found = [b for b in run_docs.code_blocks(page) if b.raises]
        assert len(found) == len(fences), f"{page.name}: {len(fences)} raises fences, " \
                                          f"the runner checks {len(found)}"
        total += len(found)
    assert total >= 6                               # 02, 03, 04, 05 (two), 12


def test_pages_show_errors_with_raises_blocks():
    """`try: ... except E as e: print(e)` passes silently when nothing is raised: not in docs/."""
    for page in PAGES:
        for block in run_docs.code_blocks(page):
            assert "as e:" not in block.source, (f"{page.name}:{block.line}: show an error with a "
                                                 f"```python title=\"raises ...\" block (see run_docs.py)")
