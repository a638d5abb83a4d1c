"""Build the tutorials as a site, and as notebooks.

    python docs/build_site.py                  # the site, strictly, into site/: open site/index.html
    python docs/build_site.py --serve          # the same, served at http://127.0.0.1:8000
    python docs/build_site.py --notebooks      # notebooks/NN-page.ipynb, executed (figures in notebooks/figures/)
    python docs/build_site.py --notebooks 02-pooling.md 06-gradient-checking.md
    python docs/build_site.py --examples       # rewrite docs/examples/*.md from the scripts' --help
    python docs/build_site.py --screenshot     # docs/figures/site_convolution.png, from headless Chromium

Every build first puts KaTeX into docs/assets/katex/ (git-ignored), fetched once from the npm
registry with `npm pack` (Node's npm must be installed): the site loads no script, style or font
from anywhere but itself. It then stages the pages into build/docs/, each ```python block
followed by what it prints (docs/outputs/<page>.json, kept current by tests/test_docs.py) and each
figure the page's code makes by a line that says when it was made, and runs `zensical build
--strict` on them (mkdocs.yml, never quietly, with the nav's pages that do not exist yet left
out); it writes each tutorial as a notebook (not executed) into the site's notebooks/ folder,
for download. tests/test_site.py runs the same
build into a temporary folder and checks the HTML, and opens three pages in Chromium.
"""
import argparse
import ast
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
KATEX = "katex@0.16"                                  # the npm package spec: the newest 0.16.x
KATEX_DIR = DOCS / "assets" / "katex"
KATEX_CACHE = ROOT / "build" / "katex"                # the npm tarball, kept between builds
NOTEBOOKS = ROOT / "notebooks"
STAGED = ROOT / "build" / "docs"                      # the pages with their outputs, built from
EXAMPLES = {                                          # script -> (its command module, related pages)
    "train_isbi": ("train", ["09-training.md", "13-laptop.md"]),
    "predict": ("predict", ["10-overlap-tile.md", "12-volumes.md"]),
    "evaluate": ("evaluate", ["11-metrics.md"]),
}
HELP_COLUMNS = "100"                                  # argparse wraps --help to $COLUMNS


class BuildError(RuntimeError):
    """The site could not be built: the message says why."""


# ------------------------------------------------------------------------------------- KaTeX

def prepare_katex():
    """docs/assets/katex/: katex.min.js, katex.min.css, fonts/, contrib/auto-render.min.js."""
    stamp = KATEX_DIR / "VERSION"
    if stamp.exists() and (KATEX_DIR / "katex.min.js").exists():
        return stamp.read_text().strip()
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(f"npm is not installed: the site's maths needs KaTeX ({KATEX}), which "
                         f"docs/build_site.py fetches from the npm registry with `npm pack` "
                         f"(Debian: apt-get install nodejs npm)")
    KATEX_CACHE.mkdir(parents=True, exist_ok=True)
    tarballs = sorted(KATEX_CACHE.glob("katex-*.tgz"))
    if not tarballs:
        run = subprocess.run([npm, "pack", KATEX, "--pack-destination", str(KATEX_CACHE),
                              "--silent"], capture_output=True, text=True)
        tarballs = sorted(KATEX_CACHE.glob("katex-*.tgz"))
        if run.returncode != 0 or not tarballs:
            raise BuildError(f"`npm pack {KATEX}` failed (exit {run.returncode}):\n"
                             f"{run.stderr.strip() or run.stdout.strip()}")
    tarball = tarballs[-1]
    wanted = ("katex.min.js", "katex.min.css", "contrib/auto-render.min.js")
    if KATEX_DIR.exists():
        shutil.rmtree(KATEX_DIR)
    KATEX_DIR.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/dist/")
            if member.isfile() and (name in wanted or name.startswith("fonts/")):
                target = KATEX_DIR / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
        version = json.load(tar.extractfile("package/package.json"))["version"]
    missing = [w for w in wanted if not (KATEX_DIR / w).exists()]
    if missing or not any((KATEX_DIR / "fonts").glob("*.woff2")):
        raise BuildError(f"{tarball.name} lacks {missing or 'fonts/*.woff2'}")
    stamp.write_text(version + "\n")
    return version


# ---------------------------------------------------------------------------- the site's config

def load_config():
    import yaml
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def nav_pages(nav):
    """Every page path named in a nav, in order."""
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from nav_pages(value)
        else:
            yield value


def existing_nav(nav):
    """The nav without the pages whose files do not exist (yet)."""
    kept = []
    for entry in nav:
        if isinstance(entry, dict):
            (title, value), = entry.items()
            if isinstance(value, list):
                value = existing_nav(value)
                if value:
                    kept.append({title: value})
            elif (DOCS / value).exists():
                kept.append(entry)
        elif (DOCS / entry).exists():
            kept.append(entry)
    return kept


def staged_page(page):
    """The Markdown of a tutorial page as the site shows it: each ```python block followed by a
    block of what it prints (titled "output"), and each figure its code makes
    (savefig("figures/x.png")) followed by a line that says it did and when."""
    import re

    run_docs = _run_docs()
    text = Path(page).read_text()
    kept = run_docs.read_outputs(page)
    if kept is None:
        return text
    outputs = iter(kept["outputs"])

    def with_output(m):
        out = next(outputs, "")
        if not out.strip():
            return m.group(0)
        return m.group(0) + '\n\n```text title="output"\n' + out.rstrip("\n") + "\n```"
    text = run_docs.FENCE.sub(with_output, text)
    made = set(re.findall(r"savefig\(\s*[\"']figures/([\w.-]+\.png)", text))
    note = (f"\n\n*Made by the code above (`python docs/run_docs.py {Path(page).name}`), on "
            f"{kept['made']}.*")
    return re.sub(r"^!\[[^\]]*\]\(figures/([\w.-]+\.png)\)$",
                  lambda m: m.group(0) + (note if m.group(1) in made else ""), text, flags=re.M)


@functools.lru_cache(maxsize=None)
def _run_docs():
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_docs", DOCS / "run_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage():
    """build/docs/: a copy of docs/ with the tutorial pages as staged_page writes them."""
    if STAGED.exists():
        shutil.rmtree(STAGED)
    shutil.copytree(DOCS, STAGED, ignore=shutil.ignore_patterns("__pycache__", "*.py", "outputs"))
    for page in tutorial_pages():
        (STAGED / page.name).write_text(staged_page(page))
    return STAGED


def write_config(site_dir):
    """A copy of mkdocs.yml with site_dir set, the staged pages as its docs_dir and the missing
    pages left out of the nav, at the repository root (relative paths keep their meaning); the
    caller removes it."""
    import yaml
    config = load_config()
    config["nav"] = existing_nav(config["nav"])
    config["site_dir"] = str(Path(site_dir).resolve())
    config["docs_dir"] = str(stage().relative_to(ROOT))
    handle, path = tempfile.mkstemp(prefix=".mkdocs-build-", suffix=".yml", dir=ROOT)
    with os.fdopen(handle, "w") as f:
        f.write("# written by docs/build_site.py from mkdocs.yml; removed after the build\n")
        yaml.safe_dump(config, f, sort_keys=False)
    return Path(path)


def zensical():
    exe = Path(sys.executable).with_name("zensical")
    if exe.exists():
        return [str(exe)]
    if shutil.which("zensical"):
        return ["zensical"]
    raise BuildError("zensical is not installed: pip install -e '.[docs]'")


def build_command(config):
    """Strict, and never quiet: a quiet build hides its warnings from --strict too."""
    return zensical() + ["build", "--strict", "--clean", "-f", str(config)]


def build(site_dir=ROOT / "site", notebooks=True):
    """Build the site strictly into `site_dir`; returns the build's output (its log)."""
    prepare_katex()
    site_dir = Path(site_dir).resolve()
    # Zensical writes only inside the project: elsewhere, build into build/ and move the site
    inside = site_dir.is_relative_to(ROOT)
    if not inside:
        (ROOT / "build").mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="site-", dir=ROOT / "build"))
    config = write_config(site_dir if inside else scratch / "site")
    try:
        run = subprocess.run(build_command(config), cwd=ROOT, capture_output=True, text=True)
        log = run.stdout + run.stderr
        if run.returncode != 0:
            raise BuildError(f"zensical build --strict failed (exit {run.returncode}):\n{log}")
        if not inside:
            if site_dir.exists():
                shutil.rmtree(site_dir)
            shutil.move(scratch / "site", site_dir)
    finally:
        config.unlink()
        if not inside:
            shutil.rmtree(scratch, ignore_errors=True)
    if notebooks:
        write_notebooks(tutorial_pages(), Path(site_dir) / "notebooks", execute=False)
    return log


def serve(address):
    import signal
    prepare_katex()
    config = write_config(ROOT / "site")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # remove the config then too
    try:
        subprocess.run(zensical() + ["serve", "-f", str(config), "-a", address], cwd=ROOT)
    except KeyboardInterrupt:
        pass
    finally:
        config.unlink()


# ------------------------------------------------------------------------------------ notebooks

def tutorial_pages():
    """The tutorial pages with code, in order: docs/NN-*.md."""
    return sorted(p for p in DOCS.glob("[0-9][0-9]-*.md"))


def page_notebook(page):
    """The notebook of a tutorial page (jupytext's Markdown format): a code cell per ```python
    block, in order; a block fenced `title="raises E"` is tagged raises-exception, so that it
    runs and shows its error as on the page."""
    import jupytext
    import nbformat
    notebook = jupytext.reads(Path(page).read_text(), fmt="md")
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("%%"):
            # a ```bash block (jupytext makes it a %%bash cell): commands to read, not to run
            magic, _, body = cell.source.partition("\n")
            cell = nbformat.v4.new_markdown_cell(f"```{magic[2:].strip()}\n{body}\n```")
        if cell.cell_type == "code" and str(cell.metadata.get("title", "")).startswith("raises "):
            cell.metadata.setdefault("tags", []).append("raises-exception")
        if cell.cell_type == "markdown" and cells and cells[-1].cell_type == "markdown":
            cells[-1].source += "\n\n" + cell.source
        else:
            cells.append(cell)
    notebook.cells = cells
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata.setdefault("language_info", {"name": "python"})
    return notebook


def write_notebooks(pages, out_dir, execute=True, timeout=1200):
    """Write each page's notebook into `out_dir` (with the docs' figures beside them, so that
    their images show before the cells run); execute them there if `execute`. Returns the
    paths."""
    import nbformat
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    for figure in (DOCS / "figures").glob("*.png"):
        shutil.copy2(figure, out_dir / "figures" / figure.name)
    paths = []
    for page in pages:
        page = Path(page) if Path(page).is_absolute() else DOCS / Path(page).name
        notebook = page_notebook(page)
        path = out_dir / (page.stem + ".ipynb")
        if execute:
            print(f"executing {path.name}", flush=True)
            execute_notebook(notebook, out_dir, timeout)
        nbformat.validate(notebook)
        nbformat.write(notebook, path)
        paths.append(path)
    return paths


def execute_notebook(notebook, workdir, timeout=1200):
    """Run the notebook in `workdir` on an ipykernel; a cell that raises fails it, unless tagged
    raises-exception. The kernel imports this checkout's tinyunet (and tests/, for page 14)."""
    from jupyter_client import KernelManager
    from nbclient import NotebookClient
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env_path] if env_path else []))
    os.environ.setdefault("MPLBACKEND", "Agg")
    sockets = tempfile.mkdtemp(prefix="tinyunet-kernel-")   # IPC: no open TCP ports
    kernel = KernelManager(kernel_name="python3", transport="ipc",
                           connection_file=os.path.join(sockets, "kernel.json"))
    try:
        NotebookClient(notebook, km=kernel, timeout=timeout,
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        if kernel.has_kernel:                   # a kernel given to nbclient is ours to stop
            kernel.shutdown_kernel(now=True)
        shutil.rmtree(sockets, ignore_errors=True)
        if env_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = env_path


# ------------------------------------------------------------------------ the example scripts

def script_help(script):
    """`python examples/SCRIPT.py --help`, wrapped at HELP_COLUMNS."""
    env = dict(os.environ, COLUMNS=HELP_COLUMNS, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, str(ROOT / "examples" / f"{script}.py"), "--help"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise BuildError(f"examples/{script}.py --help failed:\n{run.stderr}")
    return run.stdout.rstrip() + "\n"


def example_page(script):
    """docs/examples/SCRIPT.md: the command module's docstring and the script's --help."""
    sys.path.insert(0, str(DOCS))
    from griffe_tinyunet import plain_to_markdown
    module, related = EXAMPLES[script]
    source = (ROOT / "tinyunet" / "commands" / f"{module}.py").read_text()
    doc = ast.get_docstring(ast.parse(source), clean=True)
    summary, _, rest = doc.partition("\n\n")
    body = plain_to_markdown(rest.strip("\n").rstrip()).replace("```text\npython ", "```bash\npython ")
    see = ", ".join(f"[{p[:-3]}](../{p})" for p in related)
    return (f"# examples/{script}.py\n\n"
            f"<!-- written by `python docs/build_site.py --examples` from "
            f"tinyunet/commands/{module}.py and `--help`; tests/test_site.py checks it is current -->\n\n"
            f"{' '.join(summary.split())}\n\n{body}\n\n"
            f"## Options\n\n`python examples/{script}.py --help`:\n\n"
            f"```text\n{script_help(script)}```\n\n"
            f"The options, the checks of every argument and the report are in "
            f"`tinyunet/commands/{module}.py`; the work is the library's. See also: {see}.\n")


def write_examples():
    (DOCS / "examples").mkdir(exist_ok=True)
    for script in EXAMPLES:
        path = DOCS / "examples" / f"{script}.md"
        path.write_text(example_page(script))
        print(f"wrote {path.relative_to(ROOT)}")


# ---------------------------------------------------------------------------------- a browser

# Debian's chromium and chromium-driver, found on PATH (shutil.which: "" where they are missing)
CHROMIUM, CHROMEDRIVER = (shutil.which(exe) or "" for exe in ("chromium", "chromedriver"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--window-size=1280,900"]

PAGE_STATE = """
const images = [...document.querySelectorAll("article img")].map(
    img => ({src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth}));
const resources = performance.getEntriesByType("resource").map(r => r.name);
return {title: document.title,
        maths: document.querySelectorAll(".arithmatex").length,
        typeset: document.querySelectorAll(".arithmatex .katex").length,
        errors: document.querySelectorAll(".katex-error").length,
        katex_font: [...document.fonts].some(f => f.family.includes("KaTeX") && f.status == "loaded"),
        images: images, resources: resources};
"""


@functools.lru_cache(maxsize=None)
def _quiet_handler(directory):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, *args):
            pass
    return Handler


def serve_folder(site_dir):
    """An HTTP server of `site_dir` on 127.0.0.1 in a thread: (server, base URL)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(str(site_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def browse(site_dir, pages, screenshot_dir=None, wait=10.0):
    """Open `pages` (paths in the site: "index.html", "01-convolution.html") of the built site in headless Chromium,
    served on localhost, after their scripts ran: {page: PAGE_STATE}, and a screenshot of
    each into `screenshot_dir` (page-name.png)."""
    import time
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    for name, exe in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not exe:
            raise BuildError(f"{name} is not on PATH: apt-get install -y chromium chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")        # Selenium Manager: download nothing
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="tinyunet-chromium-")
    for arg in CHROMIUM_ARGS + [f"--user-data-dir={profile}"]:
        options.add_argument(arg)
    server, base = serve_folder(site_dir)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    states = {}
    try:
        driver.set_page_load_timeout(60)
        for page in pages:
            driver.get(base + page)
            deadline = time.monotonic() + wait
            while True:                                 # KaTeX typesets after the page loads
                state = driver.execute_script(PAGE_STATE)
                done = state["typeset"] >= state["maths"] and all(
                    i["complete"] for i in state["images"])
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            state["url"] = driver.current_url
            states[page] = state
            if screenshot_dir is not None:
                name = Path(page).stem if page else "index"
                driver.save_screenshot(str(Path(screenshot_dir) / f"{name}.png"))
    finally:
        driver.quit()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    return states


def shrink_png(path, colors=96):
    """Quantise a screenshot to a palette: a fraction of the size, the same to the eye."""
    from PIL import Image
    image = Image.open(path).convert("RGB")
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def screenshot(out=DOCS / "figures" / "site_convolution.png"):
    """Build the site into a temporary folder and photograph the convolution page."""
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp) / "site", notebooks=False)
        states = browse(Path(tmp) / "site", ["01-convolution.html"], screenshot_dir=tmp)
        shutil.copy(Path(tmp) / "01-convolution.png", out)
    shrink_png(out)
    state = states["01-convolution.html"]
    print(f"wrote {out.relative_to(ROOT)}: {state['typeset']} of {state['maths']} formulas "
          f"typeset, {len(state['images'])} images")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--serve", action="store_true", help="build and serve, rebuilding on edits")
    what.add_argument("--notebooks", nargs="*", metavar="PAGE",
                      help="write the tutorials' notebooks into notebooks/ and execute them "
                           "(all pages, or those named)")
    what.add_argument("--examples", action="store_true",
                      help="rewrite docs/examples/*.md from the scripts' docstrings and --help")
    what.add_argument("--screenshot", action="store_true",
                      help="rewrite docs/figures/site_convolution.png")
    parser.add_argument("--site-dir", default=str(ROOT / "site"), help="default: site/")
    parser.add_argument("--address", default="127.0.0.1:8000", help="for --serve")
    args = parser.parse_args(argv)
    try:
        if args.serve:
            serve(args.address)
        elif args.notebooks is not None:
            paths = write_notebooks(args.notebooks or tutorial_pages(), NOTEBOOKS)
            print(f"{len(paths)} notebooks executed in {NOTEBOOKS.relative_to(ROOT)}/")
        elif args.examples:
            write_examples()
        elif args.screenshot:
            screenshot()
        else:
            print(build(args.site_dir).strip())
            print(f"site built in {args.site_dir}: open {Path(args.site_dir) / 'index.html'}")
    except BuildError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
