"""Property tests of infinicli.readers: whatever the bytes, reading fails only with InputError, and UTF-8
text comes back exactly (CRLF as LF).

The number of examples is modest by default; set INFINI_FUZZ_EXAMPLES (e.g. 10000) for a long run."""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infinicli.errors import InputError
from infinicli.readers import Skipped, SourceDone, SourceStart, TextPiece, read_sources

EXAMPLES = int(os.environ.get("INFINI_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# raw bytes, plus the prefixes that steer the reader into its gzip, PDF, BOM and UTF-16 paths
PREFIXES = st.sampled_from(
    [b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"%PDF-1.4\n", b"\xef\xbb\xbf", b"\xff\xfe"]
)
ANY_BYTES = st.builds(lambda p, b: p + b, PREFIXES, st.binary(max_size=3000))
GZIPPED = st.builds(
    lambda b, cut: gzip.compress(b)[: cut or None], st.binary(max_size=2000), st.integers(0, 60)
)
CHUNK = st.integers(min_value=1, max_value=300)


def check_events(events) -> str:
    """Consume events, checking their protocol; returns the text."""
    text = []
    open_source = None
    for ev in events:
        if isinstance(ev, SourceStart):
            assert open_source is None
            open_source = ev.source
        elif isinstance(ev, TextPiece):
            assert ev.source == open_source and ev.text
            text.append(ev.text)
        elif isinstance(ev, SourceDone):
            assert ev.source == open_source
            open_source = None
        else:
            assert isinstance(ev, Skipped)
    assert open_source is None
    return "".join(text)


def read_file_bytes(data: bytes, chunk_chars: int = 65536) -> str | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.bin"
        path.write_bytes(data)
        try:
            return check_events(read_sources([str(path)], chunk_chars=chunk_chars))
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{path}: ")
            return None


@FUZZ
@given(data=st.one_of(ANY_BYTES, GZIPPED), chunk_chars=CHUNK)
def test_any_file_bytes_only_raise_input_error(data: bytes, chunk_chars: int) -> None:
    read_file_bytes(data, chunk_chars)


@FUZZ
@given(data=st.one_of(ANY_BYTES, GZIPPED), chunk_chars=CHUNK)
def test_any_stdin_bytes_only_raise_input_error(data: bytes, chunk_chars: int) -> None:
    try:
        check_events(read_sources(["-"], stdin=io.BytesIO(data), chunk_chars=chunk_chars))
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("<stdin>: ")


@FUZZ
@given(data=ANY_BYTES, password=st.one_of(st.none(), st.text(max_size=5)))
def test_any_bytes_in_a_directory_only_raise_input_error(data: bytes, password: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").write_bytes(data)
        (Path(tmp) / "b.txt").write_text("good")
        text = check_events(read_sources([tmp], password=password))
        assert text.endswith("good")


# text without C0 controls other than tab/newline/CR (never taken for binary), nor U+FEFF (a BOM)
TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="".join(map(chr, [*range(0, 9), 11, 12, *range(14, 32), 127, 0xFEFF])),
    ),
    min_size=1,
    max_size=2000,
)


@FUZZ
@given(text=TEXT, crlf=st.booleans(), bom=st.booleans(), gz=st.booleans(), chunk_chars=CHUNK)
def test_utf8_text_round_trips(text: str, crlf: bool, bom: bool, gz: bool, chunk_chars: int) -> None:
    assume("%PDF-" not in text)  # that would make it a (broken) PDF
    if crlf:
        text = text.replace("\n", "\r\n")
    data = ("\ufeff" if bom else "").encode() + text.encode("utf-8")
    if gz:
        data = gzip.compress(data)
    expected = text.replace("\r\n", "\n")
    assert read_file_bytes(data, chunk_chars) == expected
    got = check_events(read_sources(["-"], stdin=io.BytesIO(data), chunk_chars=chunk_chars))
    assert got == expected


@FUZZ
@given(text=TEXT, chunk_chars=CHUNK)
def test_pieces_never_exceed_chunk_chars(text: str, chunk_chars: int) -> None:
    assume("%PDF-" not in text)
    pieces = [
        ev.text
        for ev in read_sources(["-"], stdin=io.BytesIO(text.encode()), chunk_chars=chunk_chars)
        if isinstance(ev, TextPiece)
    ]
    assert all(0 < len(p) <= chunk_chars for p in pieces)
    assert "".join(pieces) == text.replace("\r\n", "\n")


# bytes that are never binary (no C0 controls but tab, LF, CR) and never a gzip/PDF/UTF-16 signature: a mix
# of UTF-8 text, CRLFs and stray bytes, so that UTF-8 sequences, CRLFs and invalid bytes straddle blocks
STRAY_BYTES = st.binary(max_size=6).map(
    lambda b: bytes(x for x in b if x in (9, 10, 13) or 0x20 <= x <= 0x7E or x >= 0x80)
)
TEXTLIKE_BYTES = st.lists(
    st.one_of(TEXT.map(lambda t: t[:50].encode()), STRAY_BYTES, st.just(b"\r\n"), st.just(b"\r")),
    min_size=1,
    max_size=30,
).map(b"".join)


def expected_decoding(data: bytes, sniff: int) -> str:
    """The documented rule: with a UTF-8 BOM, or when the first ``sniff`` bytes are valid UTF-8 (an incomplete
    last character allowed only if more data follows), UTF-8 up to the first invalid byte and cp1252 from
    there on; otherwise cp1252 throughout.  Then CRLF -> LF."""
    bom = data.startswith(b"\xef\xbb\xbf")
    body = data[3:] if bom else data
    window = data[:sniff]
    try:
        window.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError as exc:
        more = len(data) > sniff
        utf8 = bom or (more and exc.reason == "unexpected end of data" and exc.end == len(window))
    if utf8:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = body[: exc.start].decode("utf-8") + body[exc.start :].decode("cp1252", "replace")
    else:
        text = body.decode("cp1252", "replace")
    return text.replace("\r\n", "\n")


@FUZZ
@given(
    data=TEXTLIKE_BYTES,
    block=st.integers(1, 40),
    sniff=st.integers(1, 120),
    chunk_chars=CHUNK,
    gz=st.booleans(),
)
def test_decoding_with_tiny_blocks_follows_the_rule(
    data: bytes, block: int, sniff: int, chunk_chars: int, gz: bool
) -> None:
    assume(b"%PDF-" not in data and not data.startswith((b"\xff\xfe", b"\xfe\xff")))
    assume(data.removeprefix(b"\xef\xbb\xbf"))  # a lone BOM is an empty file
    from unittest import mock

    from infinicli import readers

    raw = gzip.compress(data) if gz else data
    with mock.patch.multiple(readers, BLOCK_BYTES=block, SNIFF_BYTES=sniff, PDF_MAGIC_WINDOW=8):
        pieces = [
            ev.text
            for ev in read_sources(["-"], stdin=io.BytesIO(raw), chunk_chars=chunk_chars)
            if isinstance(ev, TextPiece)
        ]
    assert all(0 < len(p) <= chunk_chars for p in pieces)
    assert "".join(pieces) == expected_decoding(data, sniff)
