"""Sphinx extension: write each script of a page once.

Sphinx 7.4, which Jupyter Book 1 requires, adds the inline scripts of some extensions
(thebe, togglebutton) twice, and the second copy fails in the browser with
"Identifier ... has already been declared". Sphinx 8.2 fixed this upstream.
"""


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    """Keep the first of the page's scripts that share file name, priority and attributes."""
    scripts = context.get("script_files") or []
    seen, unique = set(), []
    for script in scripts:
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
