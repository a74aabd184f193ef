"""Images for the output policy tests: real photos (the corpus), cutouts, tagged JPEGs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageDraw

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
PHOTO = CORPUS / "j01_Dragonfly_by_Bolly.jpg"  # 4000 x 3000
needs_corpus = pytest.mark.usefixtures("shared_corpus")  # fails loudly without the corpus


def save(im: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def photo(size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """A real photo (the corpus), scaled: lossy encoders behave as on product photos."""
    with Image.open(PHOTO) as im:
        im.draft("RGB", size)
        return im.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def cutout(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A transparent PNG-like image: a photo disc on a fully transparent background."""
    rgba = photo(size).convert("RGBA")
    alpha = Image.new("L", size, 0)
    ImageDraw.Draw(alpha).ellipse((50, 30, size[0] - 50, size[1] - 30), fill=255)
    rgba.putalpha(alpha)
    return rgba


def tagged_jpeg(quality: int = 95) -> bytes:
    """A JPEG with EXIF (artist, copyright, GPS), XMP (rights, digital source type, GPS)
    and IPTC (copyright notice, by-line, keywords)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Artist] = "Ada Photographer"
    exif[ExifTags.Base.Copyright] = "(c) 2026 Example Shop"
    exif[ExifTags.Base.Make] = "CameraCo"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'exif:GPSLatitude="48,51.5N" Iptc4xmpExt:DigitalSourceType='
        '"http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture">'
        '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">Example Shop</rdf:li></rdf:Alt>'
        "</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    data = save(photo((640, 480)), "JPEG", quality=quality, exif=exif.tobytes(), xmp=xmp.encode())
    iim = b""
    for dataset, value in ((116, b"(c) Example Shop"), (80, b"Ada"), (25, b"keyword")):
        iim += bytes([0x1C, 2, dataset]) + len(value).to_bytes(2, "big") + value
    resource = b"8BIM\x04\x04\x00\x00" + len(iim).to_bytes(4, "big") + iim
    payload = b"Photoshop 3.0\x00" + resource + (b"\x00" if len(iim) % 2 else b"")
    segment = b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment + data[2:]
