"""SVG sketches (Sketchy and TU-Berlin ship them), rasterised with CairoSVG so that nothing the
document holds makes the engine read another file or open a connection.

Three layers keep it closed: (1) our own XML parse (defusedxml's expat parser) declines every
external entity (a reference expands to nothing, nothing is read) and refuses internal entity
declarations (expansion bombs); (2) the parsed tree is sanitised: elements that would load
something or need system fonts (image, text, script, foreignObject, feImage, ...) are dropped and
every href that does not point inside the document (`#id`) is removed; (3) CairoSVG renders the
sanitised tree with `unsafe=False` and a URL fetcher that refuses everything (CSS `@import`
included). The drawing is rasterised with its longer side at SVG_RASTER_SIDE pixels, its aspect
ratio kept and its strokes scaled with it (the line width relative to the drawing is the SVG's
own), black on the white background: padding to a square happens in preprocessing, as for PNG
sketches.
"""
from __future__ import annotations

import functools
import logging
import re
import sys
from xml.etree import ElementTree

from PIL import Image

from splip_engine.errors import ImageDecodeError
from splip_engine.optional import import_optional

log = logging.getLogger(__name__)

SVG_RASTER_SIDE = 512
"""Pixels on the longer side of a rasterised SVG (vector data has no native resolution; 512 is over
twice the 224 px encoder input, so downscaling antialiases the strokes)."""
MAX_SVG_BYTES = 8 * 2**20
"""Larger SVG documents are refused before parsing (a sketch is a few hundred KB at most)."""
MAX_SVG_ELEMENTS = 50_000
"""SVG documents with more elements are refused before rendering (Sketchy / TU-Berlin: < 1,000)."""
MAX_SVG_DEPTH = 256
"""SVG documents nested deeper are refused (the renderer recurses per level; sketches nest < 10)."""

_INSTALL = "pip install cairosvg (it needs the cairo library: apt install libcairo2)"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_DROPPED = frozenset({
    "image", "feImage", "foreignObject", "script", "iframe", "video", "audio", "canvas",  # load things
    "text", "tspan", "textPath", "tref", "altGlyph", "font", "font-face",  # read system font files
})
"""Local names of elements removed before rendering, with everything inside them (and every
`<use>` that does not point inside the document)."""
_UNITS_PX = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*$")


def looks_like_svg(head: bytes) -> bool:
    """Whether the first bytes of a file are an SVG document (an XML declaration, or an `<svg`
    element near the start), not a raster image or other text."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<") and (b"<svg" in text or text.startswith(b"<?xml"))


def render_svg(data: bytes, name: str, side: int = SVG_RASTER_SIDE) -> Image.Image:
    """Rasterise SVG bytes into an RGB image on white, its longer side `side` pixels.

    Raises ImageDecodeError naming `name` for a huge, malformed, non-SVG or unrenderable document.
    """
    if len(data) > MAX_SVG_BYTES:
        raise ImageDecodeError(f"{name} is an SVG larger than the limit of {MAX_SVG_BYTES:,} bytes "
                               "(raise splip_engine.data.svg.MAX_SVG_BYTES if it is genuine)")
    root = _parse(data, name)
    _sanitise(root, name)
    width, height = _raster_size(root, side)
    cairosvg = import_optional("cairosvg", _INSTALL)
    try:
        tree = cairosvg.parser.Tree(bytestring=ElementTree.tostring(root), url_fetcher=_refuse_fetch, unsafe=False)
        # output=None: render in memory, read the pixels (4.5x faster than encoding and decoding a PNG)
        surface = cairosvg.surface.PNGSurface(tree, None, 96, output_width=width, output_height=height,
                                              background_color="white")
        return _pixels(surface.cairo)
    except Exception as e:  # CairoSVG raises ValueError, TypeError, KeyError, ... on odd documents
        raise ImageDecodeError(f"{name}: SVG could not be rendered ({type(e).__name__}: {e})") from e


def _pixels(cairo_surface) -> Image.Image:
    """An opaque cairo ARGB32 image surface as an RGB PIL image (the surface is finished)."""
    cairo_surface.flush()
    size, stride = (cairo_surface.get_width(), cairo_surface.get_height()), cairo_surface.get_stride()
    raw = "BGRA" if sys.byteorder == "little" else "ARGB"  # ARGB32 is one native-endian uint32 per pixel
    image = Image.frombuffer("RGBA", size, bytes(cairo_surface.get_data()), "raw", raw, stride, 1).convert("RGB")
    cairo_surface.finish()
    return image


def _parse(data: bytes, name: str) -> ElementTree.Element:
    """The document's root element, parsed without reading anything outside `data`: an external
    entity is declined (its reference expands to nothing, nothing is opened), an internal one refused."""
    defused = import_optional("defusedxml.ElementTree", _INSTALL)
    parser = defused.DefusedXMLParser(forbid_dtd=False, forbid_entities=True, forbid_external=True)
    parser.parser.EntityDeclHandler = functools.partial(_entity_declared, name)
    parser.parser.ExternalEntityRefHandler = _decline_external_entity
    try:
        parser.feed(data)
        root = parser.close()
    except defused.EntitiesForbidden as e:
        raise ImageDecodeError(f"{name}: SVG refused, it declares internal XML entities ({e}); "
                               "entities are not expanded (entity-expansion bomb guard)") from e
    except ElementTree.ParseError as e:
        raise ImageDecodeError(f"{name}: malformed SVG (XML error: {e})") from e
    if _local(root.tag) != "svg":
        raise ImageDecodeError(f"{name}: an XML document whose root is <{_local(root.tag)}>, not an SVG image")
    return root


def _entity_declared(name: str, entity: str, is_parameter: bool, value: str | None, base, sysid, pubid,
                     notation) -> None:
    """expat's EntityDeclHandler: external entities are let through (to be declined when used)."""
    from defusedxml import EntitiesForbidden

    if value is not None:  # an internal entity: the expansion-bomb vector
        raise EntitiesForbidden(entity, value, base, sysid, pubid, notation)
    log.warning("%s: external XML entity %r (%s) declined; it is not read", name, entity, sysid or pubid)


def _decline_external_entity(context, base, sysid, pubid) -> int:
    """expat's ExternalEntityRefHandler: report the entity handled without opening it (it is empty)."""
    return 1


def _sanitise(root: ElementTree.Element, name: str) -> None:
    """Refuse too many or too deeply nested elements; drop loading / font-reading elements and
    external hrefs, in place; refuse <use> reference bombs."""
    count, depth = _size_and_depth(root)
    if count > MAX_SVG_ELEMENTS:
        raise ImageDecodeError(f"{name} is an SVG of {count:,} elements, over the limit of {MAX_SVG_ELEMENTS:,} "
                               "(raise splip_engine.data.svg.MAX_SVG_ELEMENTS if it is genuine)")
    if depth > MAX_SVG_DEPTH:
        raise ImageDecodeError(f"{name} is an SVG nested {depth:,} elements deep, over the limit of {MAX_SVG_DEPTH}")
    dropped, unlinked = 0, 0
    for parent in list(root.iter()):
        for child in list(parent):
            if _local(child.tag) in _DROPPED or (_local(child.tag) == "use" and not _is_local_link(child)):
                parent.remove(child)  # a <use> of another file would make CairoSVG fetch it
                dropped += 1
    for element in root.iter():
        for attribute in (_XLINK_HREF, "href"):
            if element.get(attribute) is not None and not _is_local_link(element, attribute):
                del element.attrib[attribute]
                unlinked += 1
    if dropped or unlinked:
        log.info("%s: dropped %d SVG elements that load files or fonts and %d external links", name, dropped, unlinked)
    drawn = _drawn_elements(root, name)
    if drawn > MAX_SVG_ELEMENTS:
        raise ImageDecodeError(f"{name} is an SVG whose <use> references draw over {MAX_SVG_ELEMENTS:,} elements "
                               "(a reference bomb); raise splip_engine.data.svg.MAX_SVG_ELEMENTS if it is genuine")


def _size_and_depth(root: ElementTree.Element) -> tuple[int, int]:
    """(elements, deepest nesting) of the tree, counted without recursion."""
    count, deepest, stack = 0, 0, [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count, deepest = count + 1, max(deepest, depth)
        stack.extend((child, depth + 1) for child in element)
    return count, deepest


def _drawn_elements(root: ElementTree.Element, name: str) -> int:
    """How many elements rendering draws, each <use> counting the element it references with all
    inside it (nested uses multiply: fan-out ** depth); stops counting past MAX_SVG_ELEMENTS.
    Iterative, so neither deep nesting nor a reference cycle can overflow the stack."""
    by_id = {element.get("id"): element for element in root.iter() if element.get("id")}
    counted: dict[int, int] = {}
    stack: list[tuple[ElementTree.Element, bool]] = [(root, False)]
    open_ids: set[int] = set()
    while stack:
        element, children_done = stack.pop()
        parts = list(element)
        if _local(element.tag) == "use":
            target = by_id.get((element.get(_XLINK_HREF) or element.get("href") or "").strip()[1:])
            parts += [target] if target is not None else []
        if not children_done:
            if id(element) in open_ids:
                raise ImageDecodeError(f"{name}: malformed SVG, a <use> references an element that contains it")
            open_ids.add(id(element))
            stack.append((element, True))
            stack.extend((part, False) for part in parts if id(part) not in counted)
            continue
        open_ids.discard(id(element))
        counted[id(element)] = min(1 + sum(counted[id(part)] for part in parts), MAX_SVG_ELEMENTS + 1)
    return counted[id(root)]


def _raster_size(root: ElementTree.Element, side: int) -> tuple[int, int]:
    """(width, height) in pixels with the longer side `side`, from the SVG's width/height (its
    viewport) or else its viewBox; a document with neither is rendered square."""
    width, height = _length(root.get("width")), _length(root.get("height"))
    if not (width and height):
        numbers = re.split(r"[\s,]+", (root.get("viewBox") or "").strip())
        try:
            width, height = (float(numbers[2]), float(numbers[3])) if len(numbers) == 4 else (1.0, 1.0)
        except ValueError:
            width, height = 1.0, 1.0
    if not (width > 0 and height > 0):
        width, height = 1.0, 1.0
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _length(value: str | None) -> float | None:
    """An absolute SVG length in px (`12`, `12px`, `3mm`, ...), or None (missing, %, em, bad)."""
    match = _LENGTH.match(value or "")
    if not match or match.group(2) not in _UNITS_PX:
        return None
    return float(match.group(1)) * _UNITS_PX[match.group(2)]


def _is_local_link(element: ElementTree.Element, attribute: str | None = None) -> bool:
    """Whether the element's href (`attribute`, or whichever it has) points inside the document."""
    href = element.get(attribute) if attribute else element.get(_XLINK_HREF, element.get("href"))
    return href is not None and href.strip().startswith("#")


def _local(tag: str) -> str:
    """`{namespace}name` -> `name`."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _refuse_fetch(url: str, resource_type: str) -> bytes:
    """CairoSVG's URL fetcher: every resource (image, stylesheet, external SVG) is empty."""
    log.warning("SVG resource %s (%s) refused: SVG sketches may not load other files", url[:200], resource_type)
    return b""
