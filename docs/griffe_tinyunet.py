"""Griffe extensions for the API reference (mkdocs.yml names them): tinyunet's layout and its
plain-text docstrings.

KernelsPackage: the folder kernels/ installs as tinyunet.kernels (pyproject's package-dir), which
griffe, reading the source tree, cannot see. The extension loads kernels/ and puts it into the
tinyunet package under that name, so that `::: tinyunet.kernels.elastic` works.

PlainText: mkdocstrings renders a docstring as Markdown. Read that way, plain text goes wrong in
three places, which the extension rewrites before rendering:

- An indented block (a table of names, a formula, a command) is code to its writer, but Markdown
  folds it into the paragraph above when no blank line comes between. Every indented run of
  lines becomes a fenced ```text block, as laid out in the source.
- `<name>` is an HTML tag to Markdown and vanishes: `<` is escaped outside code.
- `$TINYUNET_DEVICE` would open maths for pymdownx.arithmatex: an environment variable is put in
  backticks.
"""
import re

import griffe

_FENCE = "```"
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_ENV_VAR = re.compile(r"\$([A-Z][A-Z0-9_]*)")


def _prose(line):
    """Escape `<` and quote `$VARS` outside the line's code spans."""
    out, last = [], 0
    for m in _CODE_SPAN.finditer(line):
        out.append(_escape(line[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_escape(line[last:]))
    return "".join(out)


def _escape(text):
    text = _ENV_VAR.sub(r"`$\1`", text)
    return text.replace("<", "&lt;")


def plain_to_markdown(text):
    """The Markdown that shows the plain-text docstring `text` as its writer laid it out."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith((" ", "\t")) and line.strip():
            block = []
            while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
                i -= 1
            indent = min(len(b) - len(b.lstrip()) for b in block if b.strip())
            if out and out[-1].strip():
                out.append("")
            out += [_FENCE + "text"] + [b[indent:] for b in block] + [_FENCE]
            if i < len(lines) and lines[i].strip():
                out.append("")
            continue
        out.append(_prose(line))
        i += 1
    return "\n".join(out)


class KernelsPackage(griffe.Extension):
    """Load the folder kernels/ as the subpackage tinyunet.kernels."""

    def on_package(self, *, pkg, loader, **kwargs):
        if pkg.name == "tinyunet" and "kernels" not in pkg.members:
            kernels = loader.load("kernels", find_stubs_package=False)
            pkg.set_member("kernels", kernels)


class PlainText(griffe.Extension):
    """Rewrite every docstring with plain_to_markdown as griffe loads it."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = plain_to_markdown(obj.docstring.value)
