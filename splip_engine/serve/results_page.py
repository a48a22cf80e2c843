"""The static results page (`search --html`, the demo's results.html): one self-contained HTML file,
each query sketch beside its ranked photos, thumbnails inlined as data: URIs.

It fits the window (hits wrap onto more lines, long file names wrap), says in its header what was
searched (the gallery, the model) and, when relevance is known, frames every hit so that it shows
on any photo: relevant hits get a thick solid frame and a ✓ badge, the others a thick dashed frame
and a ✗ badge (shape and mark as well as colour), a white ring between frame and photo, explained in a legend with the count of each.
The live page at `/` of `serve` is page.py; this one needs no server.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splip_engine.errors import SpLIPError

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f3f5f8;color:#1d2330}
header{background:#fff;border-bottom:1px solid #d9dde4;padding:.8rem 1.2rem}
h1{font-size:1.3rem;margin:0 0 .3rem} header p{margin:.15rem 0;color:#4a5261;font-size:.92rem;max-width:70rem}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1.4rem;align-items:center;margin-top:.5rem;font-size:.9rem}
.legend span{display:inline-flex;align-items:center;gap:.45rem}
.swatch{width:20px;height:14px;display:inline-block;background:#ccc;border:4px solid #fff;margin:5px}
main{padding:1rem 1.2rem;display:flex;flex-direction:column;gap:1rem}
.query{display:flex;gap:1rem;align-items:flex-start;background:#fff;border:1px solid #d9dde4;border-radius:8px;padding:.7rem}
.hits{display:flex;flex-wrap:wrap;gap:.7rem;min-width:0}
figure{margin:0;width:112px;font-size:12px;text-align:center;position:relative}
figure.sketch{border-right:3px solid #1d2330;padding-right:1rem;width:124px;flex:none}
figure img{width:104px;height:104px;object-fit:contain;background:#eef0f3;display:block;margin:6px auto}
figcaption{overflow-wrap:anywhere;line-height:1.3}
.ok img,.bad img{padding:4px;background:#fff;width:96px;height:96px}
.ok img,.swatch.ok{outline:5px solid #138a36}
.bad img,.swatch.bad{outline:5px dashed #c62828}
.mark{position:absolute;top:0;right:0;width:22px;height:22px;border-radius:50%;border:2px solid #fff;
 color:#fff;font-weight:700;line-height:20px;font-size:14px;box-shadow:0 0 2px #000}
.ok .mark{background:#138a36} .bad .mark{background:#c62828}
@media (max-width:700px){.query{flex-direction:column} figure.sketch{border-right:0;border-bottom:3px solid #1d2330;padding:0 0 .5rem}}
"""


def _thumbnail_uri(path: str | Path | None, size: int = 128) -> str:
    """A small JPEG of `path` as a data: URI, so the page is one self-contained file ("" if unreadable)."""
    from splip_engine.data.images import load_image

    if path is None:
        return ""
    try:
        image = load_image(path)
    except SpLIPError:
        return ""
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(image: str, caption: str, mark: str = "") -> str:
    badge = {"ok": '<span class="mark" aria-label="relevant">✓</span>',
             "bad": '<span class="mark" aria-label="not relevant">✗</span>'}.get(mark, "")
    return (f'<figure class="{mark}"><img src="{image}" alt="">{badge}'
            f"<figcaption>{caption}</figcaption></figure>")


def render_results_html(results: list[dict[str, Any]], title: str = "SpLIP search results",
                        relevant: dict[str, set[str]] | None = None, about: Sequence[str] = ()) -> str:
    """One block per query: the query sketch, then its ranked photos with scores and ids.

    `about`: header lines saying what was searched (gallery, model); `relevant` maps a query to its
    relevant ids: hits are then framed (✓ solid / ✗ dashed) and the legend counts them.
    """
    blocks, counts = [], {"ok": 0, "bad": 0}
    for entry in results:
        good = relevant.get(entry["query"]) if relevant else None
        query = str(entry["query"])
        cells = []
        for hit in entry["results"]:
            mark = "" if good is None else ("ok" if hit["id"] in good else "bad")
            counts[mark] = counts.get(mark, 0) + 1
            cells.append(_figure(_thumbnail_uri(hit.get("path")), f'<b>{hit["rank"]}.</b> {hit["score"]:.3f}<br>'
                                                                  f'{html.escape(hit["id"])}', mark))
        sketch = ('<figure class="sketch">'
                  f'<img src="{_thumbnail_uri(query)}" alt="query sketch"><figcaption>query<br>'
                  f"{html.escape(Path(query).name)}</figcaption></figure>")
        blocks.append(f'<section class="query">{sketch}<div class="hits">{"".join(cells)}</div></section>')
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in about)
    legend = ""
    if relevant:
        total = counts["ok"] + counts["bad"]
        legend = ('<div class="legend">'
                  f'<span><i class="swatch ok"></i>✓ solid frame: relevant (same class as the query), {counts["ok"]} of {total} hits</span>'
                  f'<span><i class="swatch bad"></i>✗ dashed frame: not relevant, {counts["bad"]} of {total}</span>'
                  "<span>each photo: rank. cosine score, then its gallery id</span></div>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1>{lines}{legend}</header><main>{''.join(blocks)}</main></body></html>")


def write_results_html(results: list[dict[str, Any]], out: str | Path, **kwargs: Any) -> Path:
    """Write `render_results_html(results, **kwargs)` to `out` atomically."""
    from splip_engine.io_utils import write_text_atomic

    write_text_atomic(out, render_results_html(results, **kwargs))
    return Path(out)
