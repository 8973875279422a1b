"""Jinja2 rendering of the HTML reports."""

from __future__ import annotations

from pathlib import Path

import jinja2
from markupsafe import Markup
import pandas as pd

from fmri_pain._version import __version__
from fmri_pain.bids.derivatives import write_text

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("fmri_pain.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


def html_table(df: pd.DataFrame, float_format: str = "{:.3g}") -> Markup:
    """A DataFrame as an HTML table (escaped cells)."""
    if df is None or df.empty:
        return Markup("<p class='small'>(none)</p>")
    return Markup(df.to_html(index=False, escape=True, border=0, na_rep="n/a",
                                          float_format=lambda v: float_format.format(v)))


def render_report(template: str, path: Path, title: str, nav: list[tuple[str, str]],
                  **context) -> Path:
    """Render ``template`` to ``path`` atomically; HTML fragments must be Markup."""
    html = _ENV.get_template(template).render(title=title, nav=nav, version=__version__, **context)
    return write_text(html, path)


def markup(fragment: str | None) -> Markup | None:
    """Mark a trusted HTML fragment (from another stage) as safe."""
    return Markup(fragment) if fragment else None
