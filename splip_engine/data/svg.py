"""SVG sketches (Sketchy and TU-Berlin ship them), rasterised with CairoSVG so that nothing the
document holds makes the engine read another file or open a connection.

Three layers keep it closed: (1) our own XML parse (defusedxml's expat parser) declines every
external entity (a reference expands to nothing, nothing is read) and allows internal entities
only while their expansion stays small (Adobe Illustrator declares its namespaces as entities;
an expansion bomb is refused by the bytes it would expand to); (2) the parsed tree is sanitised:
elements that would load something or need system fonts (text, script, foreignObject, feImage,
an image that is not a `data:` URI, ...) are dropped, every href that does not point inside the
document (`#id`) or hold a `data:` image is removed, every number in an attribute must be finite
and within MAX_SVG_NUMBER, and CSS percentages in opacities become fractions; (3) CairoSVG renders
the sanitised tree with `unsafe=False` and a URL fetcher that answers only `data:` images, each
decoded under the raster guards (size, pixel count) first, and refuses everything else (CSS
`@import` included). Time and memory are bounded by the process that renders (data/sandbox.py). The drawing is rasterised with its longer side at SVG_RASTER_SIDE pixels, its aspect
ratio kept and its strokes scaled with it (the line width relative to the drawing is the SVG's
own), black on the white background: padding to a square happens in preprocessing, as for PNG
sketches.
"""
from __future__ import annotations

import base64
import functools
import io
import logging
import math
import re
import sys
import urllib.parse
import warnings
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
MAX_SVG_NUMBER = 1e9
"""Numbers in attributes beyond this magnitude (or not finite: `1e400`) are refused: a drawing's
coordinates are < 1e6; beyond float32's exact range cairo's fixed point breaks down anyway."""
MAX_ENTITY_EXPANSION = 64 * 2**10
"""Internal XML entities may expand the document by at most this many bytes in all (Illustrator's
namespace entities: a few hundred; an expansion bomb: gigabytes)."""
MAX_EMBEDDED_PIXELS = 50_000_000
"""A `data:` raster image inside an SVG with more pixels is refused (images.MAX_IMAGE_PIXELS's value:
the same decompression-bomb guard as a file)."""

_INSTALL = "pip install cairosvg (it needs the cairo library: apt install libcairo2)"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_DROPPED = frozenset({
    "feImage", "foreignObject", "script", "iframe", "video", "audio", "canvas",  # load things
    "text", "tspan", "textPath", "tref", "altGlyph", "font", "font-face",  # read system font files
})
"""Local names of elements removed before rendering, with everything inside them (and every
`<use>` that does not point inside the document, every `<image>` that is not a `data:` URI)."""
_NOT_NUMERIC = frozenset({"id", "class", "href", _XLINK_HREF})
"""Attributes whose digits are names or data, not numbers (every other attribute's numbers are checked)."""
_NUMBER = re.compile(r"(?<![\w#])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")  # not the digits of a name
_PATH_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")  # path data: a command letter may precede
_PATH_DATA = frozenset({"d", "points"})
_PERCENT_OPACITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)%\s*$")
_OPACITIES = ("opacity", "fill-opacity", "stroke-opacity", "stop-opacity", "flood-opacity")
_STYLE_OPACITY = re.compile(r"((?:^|;)\s*(?:fill-|stroke-|stop-|flood-)?opacity\s*:\s*)"
                            r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)%")
_DATA_URI = re.compile(r"^\s*data:([^,]*?),", re.IGNORECASE | re.DOTALL)
_CSS_URL = re.compile(r"url\([^)]*\)", re.IGNORECASE)
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
    images = _embedded_images(root, name)
    width, height = _raster_size(root, side, name)
    cairosvg = import_renderer()
    try:
        tree = cairosvg.parser.Tree(bytestring=ElementTree.tostring(root), unsafe=False,
                                    url_fetcher=functools.partial(_fetch_data_image, name, images))
        # output=None: render in memory, read the pixels (4.5x faster than encoding and decoding a PNG)
        surface = cairosvg.surface.PNGSurface(tree, None, 96, output_width=width, output_height=height,
                                              background_color="white")
        return _pixels(surface.cairo)
    except Exception as e:  # CairoSVG raises ValueError, TypeError, KeyError, ... on odd documents
        raise ImageDecodeError(f"{name}: SVG could not be rendered ({type(e).__name__}: {e})") from e


def import_renderer():
    """CairoSVG and the XML parser, imported (ImportError -> SpLIPError naming what to install)."""
    import_optional("defusedxml.ElementTree", _INSTALL)
    Image.init()  # every raster plugin, for data: images
    return import_optional("cairosvg", _INSTALL)


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
    parser.parser.EntityDeclHandler = functools.partial(_entity_declared, name, data, {})
    parser.parser.ExternalEntityRefHandler = _decline_external_entity
    try:
        parser.feed(data)
        root = parser.close()
    except defused.EntitiesForbidden as e:
        raise ImageDecodeError(f"{name}: SVG refused, its internal XML entities would expand it by over "
                               f"{MAX_ENTITY_EXPANSION:,} bytes ({e}; entity-expansion bomb guard)") from e
    except ElementTree.ParseError as e:
        raise ImageDecodeError(f"{name}: malformed SVG (XML error: {e})") from e
    if _local(root.tag) != "svg":
        raise ImageDecodeError(f"{name}: an XML document whose root is <{_local(root.tag)}>, not an SVG image")
    return root


def _entity_declared(name: str, data: bytes, sizes: dict[str, int], entity: str, is_parameter: bool,
                     value: str | None, base, sysid, pubid, notation) -> None:
    """expat's EntityDeclHandler: an internal entity is allowed while what all the references in
    the document (and in later entities) would expand to stays within MAX_ENTITY_EXPANSION bytes;
    external entities are let through (to be declined when used)."""
    from defusedxml import EntitiesForbidden

    if value is not None:  # an internal entity: its size with the entities it references expanded
        size = len(value.encode()) + sum(count * sizes.get(ref, 0) for ref, count in _references(value).items())
        sizes[entity] = size
        expansion = sum(data.count(f"&{ref};".encode()) * size for ref, size in sizes.items())
        if is_parameter or size > MAX_ENTITY_EXPANSION or expansion > MAX_ENTITY_EXPANSION:
            raise EntitiesForbidden(entity, value[:40], base, sysid, pubid, notation)
        return
    log.warning("%s: external XML entity %r (%s) declined; it is not read", name, entity, sysid or pubid)


def _references(text: str) -> dict[str, int]:
    """How often each entity is referenced (`&name;`) in `text`."""
    counts: dict[str, int] = {}
    for ref in re.findall(r"&([A-Za-z_:][\w.:-]*);", text):
        counts[ref] = counts.get(ref, 0) + 1
    return counts


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
            if _local(child.tag) in _DROPPED or (_local(child.tag) == "use" and not _is_local_link(child)) \
                    or (_local(child.tag) == "image" and not _is_data_image(child)):
                parent.remove(child)  # a <use> or <image> of another file would make CairoSVG fetch it
                dropped += 1
    for element in root.iter():
        for attribute in (_XLINK_HREF, "href"):
            if element.get(attribute) is not None and not _is_local_link(element, attribute) \
                    and not (_local(element.tag) == "image" and _is_data_image(element, attribute)):
                del element.attrib[attribute]
                unlinked += 1
        _check_numbers(element, name)
        _normalise_values(element)
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


def _raster_size(root: ElementTree.Element, side: int, name: str) -> tuple[int, int]:
    """(width, height) in pixels with the longer side `side`, from the SVG's width/height (its
    viewport) or else its viewBox; a document with neither is rendered square. The numbers are
    already finite and bounded (_check_numbers); a size too small to draw is refused."""
    width, height = _length(root.get("width")), _length(root.get("height"))
    if not (width and height):
        numbers = re.split(r"[\s,]+", (root.get("viewBox") or "").strip())
        try:
            width, height = (float(numbers[2]), float(numbers[3])) if len(numbers) == 4 else (1.0, 1.0)
        except ValueError:
            width, height = 1.0, 1.0
    if not (width > 0 and height > 0):
        width, height = 1.0, 1.0
    if min(width, height) / max(width, height) * side < 1e-3 or max(width, height) < 1 / MAX_SVG_NUMBER:
        raise ImageDecodeError(f"{name}: SVG of size {width:g} x {height:g}, too thin or too small to draw")
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _length(value: str | None) -> float | None:
    """An absolute SVG length in px (`12`, `12px`, `3mm`, ...), or None (missing, %, em, bad)."""
    match = _LENGTH.match(value or "")
    if not match or match.group(2) not in _UNITS_PX:
        return None
    return float(match.group(1)) * _UNITS_PX[match.group(2)]


def _check_numbers(element: ElementTree.Element, name: str) -> None:
    """Refuse a number in any attribute (or a <style> sheet) that is not finite or beyond
    MAX_SVG_NUMBER: `1e400` in a width, a viewBox, a path, a transform, a stroke width, ..."""
    texts = [(attribute, value) for attribute, value in element.attrib.items()
             if attribute not in _NOT_NUMERIC and not attribute.startswith("{http://www.w3.org/2000/xmlns/}")]
    if _local(element.tag) == "style" and element.text:
        texts.append(("<style>", element.text))
    for attribute, value in texts:
        numbers = _PATH_NUMBER if attribute in _PATH_DATA else _NUMBER
        for token in numbers.findall(_CSS_URL.sub("", value)):
            number = float(token)
            if not math.isfinite(number) or abs(number) > MAX_SVG_NUMBER:
                raise ImageDecodeError(f"{name}: SVG <{_local(element.tag)}> {_local(attribute)}={value[:60]!r} holds "
                                       f"the number {token[:40]}, beyond the limit of {MAX_SVG_NUMBER:g} "
                                       "(numeric overflow guard)")


def _normalise_values(element: ElementTree.Element) -> None:
    """What real files write that CairoSVG cannot read, as it reads it: CSS percentages in
    opacities (`opacity="14.1176%"`, `style="fill-opacity:50%"`) as fractions, and a stray
    trailing `;` on a presentation attribute (`opacity="0.8;"`) dropped."""
    for attribute, value in element.attrib.items():
        if value.endswith(";") and attribute != "style" and attribute not in _NOT_NUMERIC:
            element.set(attribute, value.rstrip("; "))
    for attribute in _OPACITIES:
        match = _PERCENT_OPACITY.match(element.get(attribute) or "")
        if match:
            element.set(attribute, f"{float(match.group(1)) / 100:g}")
    style = element.get("style")
    if style and "%" in style:
        element.set("style", _STYLE_OPACITY.sub(lambda m: f"{m.group(1)}{float(m.group(2)) / 100:g}", style))


def _is_data_image(element: ElementTree.Element, attribute: str | None = None) -> bool:
    """Whether the element's href (`attribute`, or whichever it has) is a `data:` URI."""
    href = element.get(attribute) if attribute else element.get(_XLINK_HREF, element.get("href"))
    return href is not None and _DATA_URI.match(href) is not None


def _is_local_link(element: ElementTree.Element, attribute: str | None = None) -> bool:
    """Whether the element's href (`attribute`, or whichever it has) points inside the document."""
    href = element.get(attribute) if attribute else element.get(_XLINK_HREF, element.get("href"))
    return href is not None and href.strip().startswith("#")


def _local(tag: str) -> str:
    """`{namespace}name` -> `name`."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _embedded_images(root: ElementTree.Element, name: str) -> dict[str, bytes]:
    """The `data:` raster images of the document's <image> elements, each decoded under the raster
    guards and re-encoded as PNG, by their URI without whitespace (how the renderer asks for them).
    One over a size or pixel limit refuses the document (ImageDecodeError); one that is not a
    readable raster image (corrupt, an SVG) is dropped with a warning, as other renderers skip it."""
    images: dict[str, bytes] = {}
    for parent in list(root.iter()):
        for child in list(parent):
            if _local(child.tag) == "image":
                uri = child.get(_XLINK_HREF, child.get("href"))
                try:
                    images[_uri_key(uri)] = _guarded_data_image(uri, name)
                except _UnreadableImage as e:
                    log.warning("%s: an embedded image was skipped: %s", name, e)
                    parent.remove(child)
    return images


class _UnreadableImage(Exception):
    """A data: URI that holds no readable raster image."""


def _guarded_data_image(uri: str, name: str) -> bytes:
    """The raster image of a `data:` URI as PNG bytes; ImageDecodeError when it is over a limit."""
    header, _, payload = uri.partition(",")
    if len(payload) > MAX_SVG_BYTES * 4 // 3 + 4:
        raise ImageDecodeError(f"{name}: SVG embeds a data: image of {len(payload):,} bytes, over the limit of "
                               f"{MAX_SVG_BYTES:,}")
    try:
        raw = base64.b64decode(re.sub(r"\s+", "", payload)) if header.lower().rstrip().endswith(";base64") \
            else urllib.parse.unquote_to_bytes(payload)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"{name}: SVG embeds a data: image refused as a decompression bomb ({e})") from e
    except MemoryError:
        raise
    except Exception as e:  # bad base64, unidentified, corrupt header
        raise _UnreadableImage(f"{type(e).__name__}: {str(e)[:200]}") from e
    with image:
        if image.width * image.height > MAX_EMBEDDED_PIXELS:
            raise ImageDecodeError(f"{name}: SVG embeds a data: image of {image.width}x{image.height} = "
                                   f"{image.width * image.height:,} pixels, over the limit of {MAX_EMBEDDED_PIXELS:,} "
                                   "(decompression-bomb guard)")
        try:
            image.load()
            rgba = image.convert("RGBA")
        except MemoryError:
            raise
        except Exception as e:  # truncated or corrupt data
            raise _UnreadableImage(f"{type(e).__name__}: {str(e)[:200]}") from e
    out = io.BytesIO()
    rgba.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _uri_key(uri: str) -> str:
    """A URI without whitespace (the renderer's URL parser drops tabs and newlines inside it)."""
    return re.sub(r"\s+", "", uri)


def _fetch_data_image(name: str, images: dict[str, bytes], url: str, resource_type: str) -> bytes:
    """CairoSVG's URL fetcher: the checked PNG of an embedded `data:` image; every other resource
    (a file, a URL, a stylesheet) is empty."""
    if resource_type == "image/*" and _uri_key(url) in images:
        return images[_uri_key(url)]
    log.warning("%s: SVG resource %s (%s) refused: SVG sketches may not load other files", name, url[:200],
                resource_type)
    return b""
