// Typeset the maths that pymdownx.arithmatex (generic mode) leaves in the pages: \( ... \)
// inline and \[ ... \] display, inside elements of class "arithmatex". KaTeX and its
// auto-render extension are loaded before this script (mkdocs.yml, extra_javascript), from
// docs/assets/katex/, which docs/build_site.py fills from the npm registry: no CDN.
(function () {
  function typeset() {
    var elements = document.querySelectorAll(".arithmatex");
    for (var i = 0; i < elements.length; i++) {
      renderMathInElement(elements[i], {
        delimiters: [
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true }
        ],
        throwOnError: false
      });
    }
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(typeset);         // the theme's page-load observable (instant loading)
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", typeset);
  } else {
    typeset();
  }
})();
