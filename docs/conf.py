"""Build the documentation site: ``./dev docs`` (Sphinx, warnings as errors).

Sphinx with autodoc, not MkDocs with mkdocstrings: autodoc documents what ``import appdomain``
really gives (the package's names load lazily, and its overloads exist for type checkers
only, so a static reader such as griffe would see other signatures than users call), and
MyST lets the site include the Markdown the repository already has (docs/API.md,
docs/DESIGN.md, marshal/FORMAT.md) instead of copies of them.
"""

from __future__ import annotations

import appdomain

project = "appdomain"
author = "the appdomain authors"
release = version = appdomain.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

# Signatures as written (`type_name=_NO_TYPE`), not the repr of the default's object.
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"appdomain {release}"
