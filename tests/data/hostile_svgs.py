"""Hostile vector files for the untrusted-input tests (issue 20): render bombs of each kind, numeric
overflow, entity tricks, `data:` bombs, and the real-world constructs that must render (Adobe
Illustrator's namespace entities, CSS percentages, embedded raster images). Each builder returns
the file's bytes; sizes are parameters so the fast tests use small ones."""
from __future__ import annotations

import base64

from .imagefactory import png_with_size, strokes_svg

SVG = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def marker_bomb_svg(circles: int = 2000, vertices: int = 20000) -> bytes:
    """A marker of `circles` circles drawn at each of `vertices` polyline vertices (issue 20's 166 KB
    file that rendered for ~33 minutes at 2,000 x 20,000)."""
    shapes = "".join(f'<circle cx="{i % 50}" cy="{i // 50}" r="3"/>' for i in range(circles))
    points = " ".join(f"{i % 300},{(i * 7) % 300}" for i in range(vertices))
    return (f'<svg {SVG} width="300" height="300"><defs><marker id="m" markerWidth="50" markerHeight="50">'
            f'{shapes}</marker></defs><polyline points="{points}" marker-mid="url(#m)" fill="none" stroke="black"/>'
            "</svg>").encode()


def path_bomb_svg(segments: int = 400_000) -> bytes:
    """One path of `segments` long, self-crossing segments with a wide stroke (rasterising the
    crossings is quadratic-ish in cairo's tessellator): a few MB that renders for a long time."""
    d = " ".join(f"L{(i * 7919) % 1000} {(i * 104729) % 1000}" for i in range(segments))
    return f'<svg {SVG} width="1000" height="1000"><path d="M0 0 {d}" stroke="black" stroke-width="40"/></svg>'.encode()


def pattern_bomb_svg(side: float = 30000) -> bytes:
    """A pattern tile `side` px square (CairoSVG allocates the tile as an image surface: side^2 x 4 bytes)."""
    return (f'<svg {SVG} width="100" height="100"><defs><pattern id="p" patternUnits="userSpaceOnUse" '
            f'width="{side}" height="{side}"><rect width="{side}" height="{side}" fill="black"/></pattern></defs>'
            '<rect width="100" height="100" fill="url(#p)"/></svg>').encode()


def filter_bomb_svg(primitives: int = 60_000) -> bytes:
    """A filter chain of `primitives` offsets (the element-count guard's case)."""
    chain = "".join('<feOffset dx="1" dy="1"/>' for _ in range(primitives))
    return (f'<svg {SVG} width="100" height="100"><defs><filter id="f">{chain}</filter></defs>'
            '<rect width="50" height="50" filter="url(#f)"/></svg>').encode()


def text_bomb_svg(spans: int = 60_000) -> bytes:
    """Text of `spans` tspans (text is not rendered: it would read system fonts; the element count
    still bounds the parse)."""
    return (f'<svg {SVG} width="100" height="100"><text x="0" y="10">'
            + "".join(f"<tspan>{i}</tspan>" for i in range(spans)) + "</text></svg>").encode()


def deep_svg(depth: int = 10_000) -> bytes:
    """Groups nested `depth` deep."""
    return (f'<svg {SVG} width="10" height="10">' + "<g>" * depth + "</g>" * depth + "</svg>").encode()


def billion_laughs_svg(levels: int = 9) -> bytes:
    """The XML entity-expansion bomb: each entity ten of the one before (10 ** levels "lol"s)."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels + 1))
    return (f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]><svg {SVG} width="10" height="10">'
            f"<desc>&lol{levels};</desc></svg>").encode()


def quadratic_blowup_svg(size: int = 60_000, references: int = 2_000) -> bytes:
    """One big internal entity referenced many times (no nesting: the quadratic blowup)."""
    return (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY big "{"x" * size}">]><svg {SVG} width="10" height="10">'
            f'<desc>{"&big;" * references}</desc></svg>').encode()


def parameter_entity_svg() -> bytes:
    """A parameter entity (`%name;`) reading a file into the DTD."""
    return (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;]>'
            f'<svg {SVG} width="10" height="10"/>').encode()


def illustrator_svg() -> bytes:
    """strokes_svg() as Adobe Illustrator writes its documents: namespaces declared as internal entities."""
    prolog = ('<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [\n'
              '<!ENTITY ns_extend "http://ns.adobe.com/Extensibility/1.0/">\n'
              '<!ENTITY ns_ai "http://ns.adobe.com/AdobeIllustrator/10.0/">\n'
              '<!ENTITY ns_svg "http://www.w3.org/2000/svg">\n'
              '<!ENTITY ns_xlink "http://www.w3.org/1999/xlink">\n]>')
    body = strokes_svg().decode()
    body = body[body.index("<svg"):].replace('xmlns="http://www.w3.org/2000/svg"',
                                            'xmlns:x="&ns_extend;" xmlns:i="&ns_ai;" xmlns="&ns_svg;"', 1)
    return (prolog + body).encode()


def data_image_svg(image: bytes, mime: str = "image/png", width: int = 100, height: int = 100) -> bytes:
    """An SVG showing `image` through a base64 `data:` URI across its whole canvas."""
    uri = f"data:{mime};base64,{base64.b64encode(image).decode()}"
    return (f'<svg {SVG} width="{width}" height="{height}"><image x="0" y="0" width="{width}" height="{height}" '
            f'preserveAspectRatio="none" xlink:href="{uri}"/></svg>').encode()


def data_bomb_svg() -> bytes:
    """A `data:` PNG whose header claims 30000 x 30000 pixels (a decompression bomb inside an SVG)."""
    return data_image_svg(png_with_size(30000, 30000))


def oversize_data_image_svg() -> bytes:
    """A `data:` PNG of 10000 x 9000 = 90 MP, over the pixel limit but under PIL's own bomb guard."""
    return data_image_svg(png_with_size(10000, 9000))


OVERFLOW_PLACES = {
    "width": '<svg {ns} width="1e400" height="10"/>',
    "height": '<svg {ns} width="10" height="-1e400"/>',
    "viewBox": '<svg {ns} viewBox="0 0 1e400 10"/>',
    "huge_width": '<svg {ns} width="99999999999999999999" height="10"/>',
    "path": '<svg {ns} width="10" height="10"><path d="M0 0L1e400 5" stroke="black"/></svg>',
    "transform": '<svg {ns} width="10" height="10"><g transform="scale(1e300)"><path d="M0 0L1 1"/></g></svg>',
    "stroke_width": '<svg {ns} width="10" height="10"><path d="M0 0L1 1" stroke="black" stroke-width="1e39"/></svg>',
    "circle_r": '<svg {ns} width="10" height="10"><circle r="1e400"/></svg>',
    "style": '<svg {ns} width="10" height="10"><rect width="5" height="5" style="stroke-width:1e400"/></svg>',
    "stylesheet": '<svg {ns} width="10" height="10"><style>rect {{ stroke-width: 1e400 }}</style><rect width="5"/></svg>',
    "marker_size": '<svg {ns} width="10" height="10"><marker id="m" markerWidth="1e400"/></svg>',
}
"""Where a number can overflow: `1e400` (inf as a double) or a finite number far beyond a drawing's."""


def overflow_svg(place: str) -> bytes:
    return OVERFLOW_PLACES[place].format(ns=SVG).encode()


def percent_opacity_svg(opacity: str = "50%") -> bytes:
    """A black square at `opacity` (a CSS percentage, as Inkscape and Illustrator write them), half in
    the attribute and half in the style."""
    return (f'<svg {SVG} width="100" height="100"><rect width="50" height="100" fill="black" opacity="{opacity}"/>'
            f'<rect x="50" width="50" height="100" style="fill:black;fill-opacity:{opacity}"/></svg>').encode()


def quickdraw_overflow_line() -> bytes:
    """A QuickDraw ndjson line whose coordinates overflow a double (`1e400` parses as inf)."""
    return b'{"key_id": "1", "word": "cat", "drawing": [[[0, 1e400], [0, 5]]]}'
