"""The JPEG marker walk (``_jpeg.segments``) finds exactly the markers libjpeg would.

The walk's regular expression was rewritten for speed; these tests hold it to the plain
definition, written out here byte by byte: any bytes before a 0xFF are skipped, a run of
0xFF is fill, 0xFF 0x00 is stuffing, and any other byte after the run is a marker.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imgcompress_core._jpeg import _WITH_LENGTH, Segment, count_scans, segments

_EOI, _SOS = 0xD9, 0xDA


def plain_segments(data: bytes) -> list[Segment]:
    """The definition, one byte at a time."""
    found: list[Segment] = []
    pos, size = 2, len(data)
    while True:
        i = pos
        while True:  # to the next marker: past data bytes, fill runs and stuffed 0xFF 0x00
            while i < size and data[i] != 0xFF:
                i += 1
            run = i
            while i < size and data[i] == 0xFF:
                i += 1
            if i >= size:
                return found
            if data[i] != 0x00:
                break
            i += 1
        marker, after = data[i], i + 1
        if marker not in _WITH_LENGTH:
            found.append(Segment(marker, after - 2, after, pos, run))
            if marker == _EOI:
                return found
            pos = after
            continue
        if after + 2 > size:
            return found
        length = int.from_bytes(data[after : after + 2], "big")
        end = min(after + max(length, 2), size)
        found.append(Segment(marker, after - 2, end, pos, run))
        pos = end


# Bytes that make markers likely: 0xFF runs, stuffing, SOS, RSTn, EOI, lengths.
_BYTES = st.sampled_from([0x00, 0xFF, 0xFF, 0xFF, _SOS, 0xD0, _EOI, 0xC0, 0xE1, 0x02, 0x41])


@settings(max_examples=400)
@given(body=st.lists(_BYTES, max_size=80).map(bytes))
def test_the_fast_walk_finds_the_markers_of_the_definition(body: bytes) -> None:
    data = b"\xff\xd8" + body
    assert list(segments(data)) == plain_segments(data)


def test_fill_bytes_before_a_marker_are_its_run() -> None:
    data = b"\xff\xd8" + b"ab" + b"\xff" * 5 + b"\xda\x00\x02" + b"\xff\x00\xff\xff\xd9"
    walked = list(segments(data))
    assert walked == plain_segments(data)
    assert [(s.marker, s.run, s.start) for s in walked] == [(_SOS, 4, 8), (_EOI, 14, 15)]


def test_the_corpus_photos_walk_alike(shared_corpus: Path) -> None:
    for path in sorted(shared_corpus.glob("j*.jpg"))[:8]:
        data = path.read_bytes()
        walked = list(segments(data))
        assert walked == plain_segments(data), path.name
        assert count_scans(data, 100) == sum(s.marker == _SOS for s in walked) >= 1
