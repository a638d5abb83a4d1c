"""The tutorials as a site (docs/build_site.py): built once per session with `zensical build
--strict`, every HTML page read for leftover Markdown, three pages opened in headless Chromium;
the notebooks generated from the pages.

Needs the "docs" extra (in "dev"), Node's npm (KaTeX comes from the npm registry) and, for the
browser test, Debian's chromium and chromium-driver. Where npm or the browser is missing, the
tests that need it skip with one line that names what to install (a bare machine: Python and
nothing else); .ci/run installs both, so CI runs every one, and wherever they are present a
failure is a failure.
"""
import html.parser
import importlib.util
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_site = _load("build_site")
run_docs = _load("run_docs")
TUTORIALS = build_site.tutorial_pages()


NEEDS_NPM = ("the docs site needs Node's npm for KaTeX (Debian: apt-get install nodejs npm); "
             ".ci/run installs it")
NEEDS_CHROMIUM = ("the browser test needs Chromium (Debian: apt-get install chromium "
                  "chromium-driver); .ci/run installs it")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once for this module: (folder, the build's log)."""
    fetched = all((build_site.KATEX_DIR / f).exists() for f in ("VERSION", "katex.min.js"))
    if shutil.which("npm") is None and not fetched:
        pytest.skip(NEEDS_NPM)
    out = tmp_path_factory.mktemp("site") / "site"
    try:
        log = build_site.build(out)
    except build_site.BuildError as e:
        error = str(e)
    else:
        return out, log
    pytest.fail(error, pytrace=False)


def html_pages(folder):
    return sorted(Path(folder).rglob("*.html"))


# --------------------------------------------------------------------------- reading the HTML

class PageText(html.parser.HTMLParser):
    """The text a reader sees outside code and maths; the code blocks; the links and assets."""
    SKIP = {"pre", "code", "script", "style", "kbd", "samp"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
            "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.pres, self.titles = [], [], [], []
        self.links, self.assets, self._title = [], [], None

    def _skipping(self):
        return any(tag in self.SKIP or "arithmatex" in classes for tag, classes in self.stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "pre" and not self._skipping():
            self.pres.append("")
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet", "icon"):
            self.assets.append(attrs["href"])
        if tag == "span" and "filename" in (attrs.get("class") or ""):
            self._title = ""
        if tag not in self.VOID:
            self.stack.append((tag, attrs.get("class") or ""))

    def handle_endtag(self, tag):
        if self._title is not None and tag == "span":
            self.titles.append(self._title.strip())
            self._title = None
        for i in range(len(self.stack) - 1, -1, -1):      # tolerate unclosed tags
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self._title is not None:
            self._title += data
        if not self._skipping():
            self.text.append(data)
        elif any(t == "pre" for t, _ in self.stack):
            self.pres[-1] += data


def read_page(path):
    parser = PageText()
    parser.feed(Path(path).read_text())
    parser.close()
    return parser


def leftover_markdown(page):
    """What Markdown left unrendered in a page's text: literal fences, dollars."""
    text = "".join(page.text)
    found = []
    for mark in ("```", "~~~", "$$", "$"):
        for m in re.finditer(re.escape(mark), text):
            found.append(f"{mark!r} in ...{text[max(0, m.start() - 60):m.end() + 60]!r}...")
            text = text.replace(mark, " " * len(mark))
    return found


def markdown_fences(page):
    """The fenced code blocks of a Markdown page: [lines of code]."""
    fences, inside = [], None
    for line in Path(page).read_text().splitlines():
        m = re.match(r"^\s*(`{3,}|~{3,})(.*)$", line)
        if inside is None:
            if m:
                inside = m.group(1)
                fences.append([])
        elif m and m.group(1).startswith(inside) and not m.group(2).strip():
            inside = None
        else:
            fences[-1].append(line)
    return fences


def test_the_scanner_sees_a_broken_fence():
    """The check below catches the bug it was written for: ```python raises=ValueError is no
    fence to Python-Markdown, the comment after it becomes a heading, a ``` is left in the text."""
    import markdown
    broken = ("Some text:\n\n```python raises=ValueError\nint('x')\n# ValueError: invalid\n```\n\n"
              "Then $$x$$ unrendered and a formula $a + b$.\n")
    rendered = markdown.markdown(broken, extensions=["pymdownx.superfences", "pymdownx.highlight"])
    page = PageText()
    page.feed(rendered)
    left = leftover_markdown(page)
    assert any("'```'" in f for f in left) and any("'$$'" in f for f in left)
    assert any("'$'" in f for f in left)
    fixed = markdown.markdown(broken.replace("raises=ValueError", 'title="raises ValueError"'),
                              extensions=["pymdownx.superfences", "pymdownx.highlight"])
    page = PageText()
    page.feed(fixed)
    assert page.pres == ["int('x')\n# ValueError: invalid\n"]
    assert page.titles == ["raises ValueError"]


# ------------------------------------------------------------------------------- the site

def test_the_site_builds_strictly(site):
    folder, log = site
    command = build_site.build_command("mkdocs.yml")
    assert "--strict" in command and not {"-q", "--quiet"} & set(command)   # never quiet
    assert "Warning" not in log and "issues found" not in log.replace("No issues found", ""), log
    assert (folder / "index.html").exists()


def test_every_page_of_the_nav_is_built_and_every_page_is_in_the_nav(site):
    folder = site[0]
    nav = list(build_site.nav_pages(build_site.load_config()["nav"]))
    for page in nav:
        if (DOCS / page).exists():
            assert (folder / page).with_suffix(".html").exists(), f"{page} is not in the site"
        else:                   # only a tutorial not written yet may wait in the nav
            assert re.fullmatch(r"\d\d-[\w-]+\.md", page), f"mkdocs.yml: nav names {page}, " \
                                                          f"which does not exist"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
             if "assets" not in p.parts and "notebooks" not in p.parts}
    assert pages - set(nav) == set(), f"pages missing from the nav in mkdocs.yml: {pages - set(nav)}"


def test_no_markdown_is_left_in_any_page(site):
    folder = site[0]
    pages = html_pages(folder)
    assert len(pages) > 30
    problems = {p.relative_to(folder).as_posix(): leftover_markdown(read_page(p)) for p in pages}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, "unrendered Markdown:\n" + "\n".join(
        f"{k}: {f}" for k, v in problems.items() for f in v[:3])


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_each_fence_is_a_code_block(site, page):
    """Every fence of the page's Markdown is a code block of its HTML, none swallowed another
    fence (a fence Markdown does not read as one pairs the following fences wrongly), and the
    raises blocks are titled."""
    folder = site[0]
    rendered = read_page(folder / page.with_suffix(".html").name)
    code_lines = {line.strip() for pre in rendered.pres for line in pre.splitlines()}
    for fence in markdown_fences(page):
        first = next((line.strip() for line in fence if line.strip()), None)
        assert first is None or first in code_lines, f"{page.name}: the block starting " \
                                                     f"{first!r} is no code block in the HTML"
    assert not [line for line in code_lines if line.startswith(("```", "~~~"))], page.name
    assert len(rendered.pres) >= len(markdown_fences(page)), page.name
    raises = [f"raises {b.raises}" for b in run_docs.code_blocks(page) if b.raises]
    assert [t for t in rendered.titles if t.startswith("raises ")] == raises


def test_the_derivations_are_maths(site):
    folder = site[0]
    for name in ("01-convolution", "02-pooling", "03-upconv-crop-concat",
                 "04-softmax-cross-entropy", "06-gradient-checking", "08-weight-map",
                 "11-metrics"):
        text = (folder / f"{name}.html").read_text()
        assert text.count('<div class="arithmatex">') >= 1, f"{name}: no display maths"
    for page in html_pages(folder / "reference"):    # docstrings hold no maths: a $VAR is code
        assert "arithmatex" not in page.read_text(), f"{page.name}: maths in a docstring"


def test_links_and_assets_resolve_inside_the_site(site):
    """Every link between pages, every image, script and style sheet is a file of the site:
    nothing comes from another site (the KaTeX fonts included)."""
    folder = site[0]
    missing = []
    for page in html_pages(folder):
        parsed = read_page(page)
        for url in parsed.assets:
            assert not urlsplit(url).scheme and not url.startswith("//"), \
                f"{page.name} loads {url} from outside the site"
        for url in parsed.assets + [u for u in parsed.links if not urlsplit(u).scheme]:
            path = unquote(urlsplit(url).path)
            if not path:
                continue                                   # a link within the page
            target = (folder / path.lstrip("/") if path.startswith("/")      # 404.html
                      else page.parent / path).resolve()
            if path.endswith("/"):
                target = target / "index.html"
            if not target.exists():
                missing.append(f"{page.relative_to(folder)} -> {url}")
    assert not missing, "\n".join(missing[:20])
    css = (folder / "assets" / "katex" / "katex.min.css").read_text()
    fonts = re.findall(r"url\(([^)]+)\)", css)
    assert fonts and all((folder / "assets" / "katex" / f).exists() for f in fonts)


def test_the_api_reference_covers_the_public_modules(site):
    folder = site[0]
    text = "".join(p.read_text() for p in html_pages(folder / "reference"))
    for module in ["tinyunet", "tinyunet.ops.conv3x3", "tinyunet.model", "tinyunet.engine",
                   "tinyunet.backend", "tinyunet.optim", "tinyunet.data.images", "tinyunet.train",
                   "tinyunet.config", "tinyunet.checkpoint", "tinyunet.infer", "tinyunet.volume",
                   "tinyunet.metrics", "tinyunet.export", "tinyunet.kernels.elastic"]:
        assert f'id="{module}"' in text, f"the API reference lacks {module}"
    assert 'id="tinyunet.model.UNet"' in text


def test_the_example_pages_show_the_current_help():
    for script in build_site.EXAMPLES:
        page = DOCS / "examples" / f"{script}.md"
        assert page.read_text() == build_site.example_page(script), \
            f"{page.relative_to(ROOT)} is stale: run python docs/build_site.py --examples"


# ---------------------------------------------------------------------------- in a browser

def test_pages_render_in_chromium(site, tmp_path):
    """The index, the convolution page (maths) and the metrics page (figures), served on
    localhost: every formula typeset by KaTeX in its fonts, every image loaded."""
    if not (build_site.CHROMIUM and build_site.CHROMEDRIVER):
        pytest.skip(NEEDS_CHROMIUM)
    folder = site[0]
    pages = ["index.html", "01-convolution.html", "11-metrics.html"]
    try:
        states = build_site.browse(folder, pages, screenshot_dir=tmp_path)
    except build_site.BuildError as e:
        states, error = None, str(e)
    if states is None:
        pytest.fail(error, pytrace=False)
    for page, state in states.items():
        assert state["title"] and state["errors"] == 0, (page, state["title"], state["errors"])
        assert state["typeset"] == state["maths"], f"{page}: {state['typeset']} of " \
                                                   f"{state['maths']} formulas typeset"
        unloaded = [i["src"] for i in state["images"] if not i["complete"] or i["width"] == 0]
        assert not unloaded, f"{page}: images not loaded: {unloaded}"
        base = state["url"].rsplit("/", 1)[0]
        assert all(r.startswith(base) for r in state["resources"]), state["resources"]
        assert (tmp_path / f"{Path(page).stem}.png").stat().st_size > 10_000
    assert states["01-convolution.html"]["maths"] >= 5 and states["01-convolution.html"]["katex_font"]
    assert len(states["11-metrics.html"]["images"]) >= 2
    assert states["11-metrics.html"]["maths"] >= 5


def test_the_committed_screenshot_is_shown():
    shot = DOCS / "figures" / "site_convolution.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 400_000
    assert "(figures/site_convolution.png)" in (DOCS / "site.md").read_text()


# -------------------------------------------------------------------------------- notebooks

def test_every_tutorial_is_a_notebook(site, tmp_path):
    """One valid notebook per tutorial, one code cell per ```python block, in order, the error
    blocks tagged raises-exception; the built site offers them for download."""
    import nbformat
    paths = build_site.write_notebooks(TUTORIALS, tmp_path, execute=False)
    assert [p.stem for p in paths] == [p.stem for p in TUTORIALS] and len(paths) >= 14
    for page, path in zip(TUTORIALS, paths):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        blocks = run_docs.code_blocks(page)
        assert [c.source for c in code] == [b.source.rstrip("\n") for b in blocks], page.name
        tagged = ["raises-exception" in c.metadata.get("tags", []) for c in code]
        assert tagged == [b.raises is not None for b in blocks], page.name
        assert (site[0] / "notebooks" / path.name).exists()


def test_a_notebook_executes(tmp_path):
    """02-pooling's notebook runs on a Jupyter kernel: its outputs, and its error block's error."""
    import nbformat
    path, = build_site.write_notebooks([DOCS / "02-pooling.md"], tmp_path, execute=True,
                                       timeout=120)
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "[[4. 0.]" in "".join(o.get("text", "") for o in code[0].outputs)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ValueError"]
    assert "raises-exception" in code[-1].metadata["tags"] and code[-1].outputs == errors
