"""The metadata ``metadata="copyright"`` keeps: who made an image and who owns it.

Kept, when the input has them:

- EXIF ``Artist`` and ``Copyright`` (nothing else of the EXIF: no GPS, no camera data, no
  thumbnail, no orientation, which is applied to the pixels);
- IPTC (IIM, a JPEG's APP13) rights fields: 2:80 By-line, 2:85 By-line Title, 2:110
  Credit, 2:115 Source, 2:116 Copyright Notice, and 1:90 (the character set they are
  written in); written back into JPEG outputs only, the one format that carries IIM;
- XMP rights properties: ``dc:creator``, ``dc:rights``, every ``xmpRights:`` property,
  ``photoshop:Credit``, ``photoshop:Source``, ``photoshop:AuthorsPosition``, the PLUS
  licensing properties, and the IPTC ``Iptc4xmpExt:DigitalSourceType`` (how the image
  was made: a camera, a composite, generative AI). Every other property -- GPS position,
  history, device data -- is dropped.

The XMP is read with the standard library's XML parser (expat, which refuses entity
expansion bombs), after a size cap; anything unreadable is dropped, never guessed at.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # expat: capped input, no external entities
from dataclasses import dataclass

from PIL import ExifTags, Image, IptcImagePlugin

__all__ = ["MAX_ICC", "Kept", "copyright_metadata", "insert_segments", "save_parameters"]

_MAX_XMP = 256 * 1024
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_CHUNK = 65_000  # bytes of profile per APP2 segment (at most 65,519 fit in one)
MAX_ICC = 255 * _ICC_CHUNK  # a JPEG numbers the segments of one profile 1 to 255 at most
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_X = "adobe:ns:meta/"
_NAMESPACES = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "plus": "http://ns.useplus.org/ldf/xmp/1.0/",
}
_KEEP_PROPERTIES = frozenset(
    {
        f"{{{_NAMESPACES['dc']}}}creator",
        f"{{{_NAMESPACES['dc']}}}rights",
        f"{{{_NAMESPACES['photoshop']}}}Credit",
        f"{{{_NAMESPACES['photoshop']}}}Source",
        f"{{{_NAMESPACES['photoshop']}}}AuthorsPosition",
        f"{{{_NAMESPACES['Iptc4xmpExt']}}}DigitalSourceType",
    }
)
_KEEP_NAMESPACES = frozenset({_NAMESPACES["xmpRights"], _NAMESPACES["plus"]})
_EXIF_TAGS = (ExifTags.Base.Artist, ExifTags.Base.Copyright)
_IPTC_KEEP = ((1, 90), (2, 80), (2, 85), (2, 110), (2, 115), (2, 116))


@dataclass(frozen=True, slots=True)
class Kept:
    """The rights metadata found in an input, ready to write into an output."""

    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None  # a JPEG APP13 segment's payload (Photoshop 3.0 resources)

    def __bool__(self) -> bool:
        return bool(self.exif or self.xmp or self.iptc)


def copyright_metadata(im: Image.Image) -> Kept:
    """Return the rights metadata of an opened (not yet transformed) image."""
    return Kept(_exif(im), _xmp(im), _iptc(im))


def save_parameters(kept: Kept, fmt: str) -> dict[str, object]:
    """Return the ``save`` parameters that write ``kept`` into an output of ``fmt``."""
    params: dict[str, object] = {}
    if kept.exif:
        params["exif"] = kept.exif
    if kept.xmp:
        if fmt == "png":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_itxt("XML:com.adobe.xmp", kept.xmp.decode("utf-8"))
            params["pnginfo"] = info
        else:
            params["xmp"] = kept.xmp
    return params


def insert_segments(
    jpeg: bytes, kept: Kept, *, iptc_only: bool = False, icc: bytes | None = None
) -> bytes:
    """Return a JPEG with ``kept`` written as APP1 (EXIF, XMP) and APP13 (IPTC) segments
    after its own APPn segments (with ``iptc_only``: the APP13 alone, for an output whose
    EXIF and XMP the encoder wrote), and ``icc`` as APP2 ``ICC_PROFILE`` segments."""
    payloads = [] if iptc_only else [(0xE1, kept.exif), (0xE1, _XMP_HEADER + (kept.xmp or b""))]
    payloads.extend((0xE2, chunk) for chunk in _icc_chunks(icc or b""))
    payloads.append((0xED, kept.iptc))
    segments = b"".join(
        b"\xff" + bytes([marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
        for marker, payload in payloads
        if payload and payload != _XMP_HEADER and len(payload) < 0xFFF0
    )
    position = 2
    while jpeg[position : position + 1] == b"\xff" and 0xE0 <= jpeg[position + 1] <= 0xEF:
        position += 2 + int.from_bytes(jpeg[position + 2 : position + 4], "big")
    return jpeg[:position] + segments + jpeg[position:]


def _icc_chunks(icc: bytes) -> list[bytes]:
    """The payloads of the APP2 segments that carry ``icc`` (ICC.1, annex B.4): numbered
    chunks after the ``ICC_PROFILE`` signature; ``icc`` is at most MAX_ICC bytes."""
    size = _ICC_CHUNK
    parts = [icc[start : start + size] for start in range(0, len(icc), size)]
    return [b"ICC_PROFILE\x00" + bytes([n, len(parts)]) + part for n, part in enumerate(parts, 1)]


def _exif(im: Image.Image) -> bytes | None:
    try:
        exif = im.getexif()
    except Exception:  # unreadable EXIF: nothing to keep
        return None
    kept = Image.Exif()
    for tag in _EXIF_TAGS:
        value = exif.get(tag)
        if isinstance(value, str | bytes) and value:
            kept[tag] = value
    return kept.tobytes() if len(kept) else None


def _iptc(im: Image.Image) -> bytes | None:
    if not isinstance(im, Image.Image) or im.format not in ("JPEG", "MPO"):
        return None
    try:
        found = IptcImagePlugin.getiptcinfo(im)  # type: ignore[arg-type]
    except Exception:  # unreadable IPTC: nothing to keep
        return None
    if not found:
        return None
    iim = bytearray()
    for key in _IPTC_KEEP:
        values = found.get(key)
        for value in values if isinstance(values, list) else [values] if values else []:
            if len(value) < 0x8000:
                iim += bytes([0x1C, key[0], key[1]]) + len(value).to_bytes(2, "big") + value
    if not any(key[0] == 2 and key in found for key in _IPTC_KEEP):
        return None
    resource = b"8BIM\x04\x04\x00\x00" + len(iim).to_bytes(4, "big") + bytes(iim)
    if len(iim) % 2:
        resource += b"\x00"
    return b"Photoshop 3.0\x00" + resource


def _xmp(im: Image.Image) -> bytes | None:
    raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes) or not raw or len(raw) > _MAX_XMP:
        return None
    try:
        root = ET.fromstring(raw.strip(b"\x00 \r\n\t"))  # noqa: S314 - see the module's note
    except ET.ParseError:
        return None
    kept_elements: list[ET.Element] = []
    kept_attributes: dict[str, str] = {}
    for description in root.iter(f"{{{_RDF}}}Description"):
        for name, value in description.attrib.items():
            if _kept(name):
                kept_attributes[name] = value
        kept_elements.extend(child for child in description if _kept(child.tag))
    if not kept_elements and not kept_attributes:
        return None
    return _packet(kept_elements, kept_attributes)


def _kept(name: str) -> bool:
    if name in _KEEP_PROPERTIES:
        return True
    return name.startswith("{") and name[1:].split("}", 1)[0] in _KEEP_NAMESPACES


def _packet(elements: list[ET.Element], attributes: dict[str, str]) -> bytes:
    """Write a fresh XMP packet holding only the kept properties."""
    ET.register_namespace("x", _X)
    ET.register_namespace("rdf", _RDF)
    for prefix, uri in _NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    meta = ET.Element(f"{{{_X}}}xmpmeta")
    rdf = ET.SubElement(meta, f"{{{_RDF}}}RDF")
    description = ET.SubElement(rdf, f"{{{_RDF}}}Description", {f"{{{_RDF}}}about": ""})
    description.attrib.update(attributes)
    description.extend(elements)
    body = ET.tostring(meta, encoding="unicode")
    return (
        f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>{body}<?xpacket end="w"?>'
    ).encode()
