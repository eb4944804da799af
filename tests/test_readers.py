"""Tests of infinicli.readers: text/gzip/PDF/stdin/directory reading, its events and its one-line errors."""

from __future__ import annotations

import gzip
import io
import logging
import os
import random
import tracemalloc
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from infinicli import readers
from infinicli.errors import InputError, UsageError
from infinicli.readers import (
    ReadSummary,
    Skipped,
    SourceDone,
    SourceInfo,
    SourceStart,
    TextPiece,
    estimate_bytes,
    expand_paths,
    fingerprint_sources,
    read_sources,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def corpus_root() -> Path:
    """The shared corpus (``<repo>/../shared/corpus`` or $INFINI_CORPUS); skips when it is absent."""
    root = Path(os.environ.get("INFINI_CORPUS", REPO.parent / "shared" / "corpus"))
    if not root.is_dir():
        pytest.skip(f"corpus not present at {root}")
    return root


# ----------------------------------------------------------------------------------------------- helpers


def events_of(paths: Sequence[str | Path], **kw) -> list:
    return list(read_sources([str(p) for p in paths], **kw))


def text_of(events: Iterable) -> str:
    return "".join(e.text for e in events if isinstance(e, TextPiece))


def kinds_of(events: Iterable) -> list[str]:
    return [type(e).__name__ for e in events]


def input_error(paths: Sequence[str | Path], **kw) -> str:
    with pytest.raises(InputError) as info:
        events_of(paths, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: Sequence[str], *, startxref_offset: int = 0) -> bytes:
    """A minimal hand-made PDF: one Helvetica line of text per page ("" gives a page without text)."""
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({_pdf_escape(text)}) Tj ET".encode("latin-1")
        bodies.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        bodies.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        xref + startxref_offset,
    )
    return bytes(out)


def blank_pdf(pages: int = 2) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def encrypted_pdf(text_pages: Sequence[str], user: str, owner: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(text_pages))))
    writer.encrypt(user_password=user, owner_password=owner, algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def words(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    parts: list[str] = []
    size = 0
    while size < n_chars:
        w = rng.choice(vocab) + ("\n" if rng.random() < 0.1 else " ")
        parts.append(w)
        size += len(w)
    return "".join(parts)[:n_chars]


class ChunkedStdin(io.RawIOBase):
    """A pipe-like stdin: short reads, then optionally an error (the writer went away)."""

    def __init__(self, parts: Sequence[bytes], error: BaseException | None = None) -> None:
        self.parts = list(parts)
        self.error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.parts:
            return self.parts.pop(0)
        if self.error is not None:
            raise self.error
        return b""


# -------------------------------------------------------------------------------------------------- text


def test_utf8_text_events_and_done(tmp_path: Path) -> None:
    data = "héllo wörld\n€ and 日本語\n".encode()
    p = tmp_path / "a.txt"
    p.write_bytes(data)
    events = events_of([p])
    assert kinds_of(events) == ["SourceStart", "TextPiece", "SourceDone"]
    info = SourceInfo(str(p), str(p), len(data), "text")
    assert events[0] == SourceStart(info)
    assert events[1] == TextPiece(info, data.decode())
    import hashlib

    assert events[2] == SourceDone(info, hashlib.sha256(data).hexdigest(), len(data), None)


def test_bom_stripped_and_crlf_normalised(tmp_path: Path) -> None:
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\nlone\rcr\r\n")
    assert text_of(events_of([p])) == "line one\nline two\nlone\rcr\n"


def test_crlf_and_multibyte_split_across_blocks(tmp_path: Path) -> None:
    block = readers.BLOCK_BYTES
    # a CRLF straddling the first block boundary, a 3-byte character straddling the second, and a
    # 4-byte one straddling the sniff window of a later block
    data = b"a" * (block - 1) + b"\r\n" + b"b" * (block - 3) + "€".encode() + b"c" * (block - 2)
    data += "😀".encode() + b"tail"
    p = tmp_path / "split.txt"
    p.write_bytes(data)
    text = text_of(events_of([p], chunk_chars=10_000))
    assert text == data.decode().replace("\r\n", "\n")


def test_cp1252_fallback(tmp_path: Path) -> None:
    p = tmp_path / "win.txt"
    p.write_bytes(b"\x93Quoted\x94 caf\xe9 \x96 na\xefve \x80 5\x81\r\n")
    assert text_of(events_of([p])) == "\u201cQuoted\u201d caf\u00e9 \u2013 na\u00efve \u20ac 5\ufffd\n"


def test_late_invalid_utf8_switches_to_cp1252_for_the_rest(tmp_path: Path) -> None:
    prefix = "x" * 100_000 + "é"  # valid UTF-8 well past the 64 KiB sniff window
    p = tmp_path / "late.txt"
    p.write_bytes(prefix.encode() + b" \x93late\x94 \xc3\xa9")
    # from the first bad byte on, everything is cp1252 -- even bytes that would be valid UTF-8
    assert text_of(events_of([p])) == prefix + " \u201clate\u201d \u00c3\u00a9"


def test_utf16_with_bom(tmp_path: Path) -> None:
    p = tmp_path / "u16.txt"
    p.write_bytes("Grüße\r\naus Köln\n".encode("utf-16"))
    assert text_of(events_of([p])) == "Grüße\naus Köln\n"


def test_pieces_are_bounded_and_cut_at_newlines(tmp_path: Path) -> None:
    text = words(300_000, seed=1)
    p = tmp_path / "w.txt"
    p.write_text(text)
    pieces = [e.text for e in events_of([p], chunk_chars=1000) if isinstance(e, TextPiece)]
    assert "".join(pieces) == text
    assert all(0 < len(x) <= 1000 for x in pieces)
    assert sum(x.endswith("\n") for x in pieces[:-1]) >= 0.9 * (len(pieces) - 1)


def test_tiny_chunk_size(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("abc def\nghi")
    pieces = [e.text for e in events_of([p], chunk_chars=1) if isinstance(e, TextPiece)]
    assert pieces == list("abc def\nghi")


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        read_sources([])
    with pytest.raises(UsageError):
        read_sources(["-", "-"])
    with pytest.raises(UsageError):
        read_sources(["x"], chunk_chars=0)


def test_100mb_line_streams_in_bounded_memory(tmp_path: Path) -> None:
    p = tmp_path / "big.txt"
    size = 100 * 1024 * 1024
    block = b"abcdefghij" * 100_000
    with open(p, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(b"x" * (size % len(block)))
    total = 0
    longest = 0
    tracemalloc.start()
    try:
        for ev in read_sources([str(p)]):
            if isinstance(ev, TextPiece):
                total += len(ev.text)
                longest = max(longest, len(ev.text))
            elif isinstance(ev, SourceDone):
                assert ev.bytes_read == size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert longest <= 65536
    assert peak < 8 * 1024 * 1024, peak


def test_raw_offset_tracks_progress(tmp_path: Path) -> None:
    p = tmp_path / "p.txt"
    p.write_text(words(400_000))
    offsets = [e.raw_offset for e in events_of([p]) if isinstance(e, TextPiece)]
    assert offsets == sorted(offsets)
    assert offsets[-1] == 400_000
    assert TextPiece(SourceInfo("a", None, None, "stdin"), "x", 5) == TextPiece(
        SourceInfo("a", None, None, "stdin"), "x"
    )


# ------------------------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    assert input_error([tmp_path / "nope.txt"]) == f"{tmp_path / 'nope.txt'}: no such file or directory"


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "gone")
    assert input_error([link]) == f"{link}: broken symbolic link"


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    assert input_error([p]) == f"{p}: empty file"


def test_bom_only_file_is_empty(tmp_path: Path) -> None:
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf")
    assert input_error([p]) == f"{p}: empty file"


def test_binary_nul(tmp_path: Path) -> None:
    p = tmp_path / "prog.txt"
    p.write_bytes(b"ELF\x00\x01\x02" + bytes(range(256)) * 10)
    assert input_error([p]) == f"{p}: binary file, not text"


def test_binary_control_chars_without_nul(tmp_path: Path) -> None:
    p = tmp_path / "ctl.dat"
    p.write_bytes(b"abc\x01\x02\x03def\x05\x06" * 100)
    assert input_error([p]) == f"{p}: binary file, not text"


def test_ansi_escapes_and_form_feeds_are_text(tmp_path: Path) -> None:
    p = tmp_path / "color.log"
    text = "\x1b[31mERROR\x1b[0m disk\tfull\f\n" * 50
    p.write_text(text)
    assert text_of(events_of([p])) == text


def test_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.txt"
    p.write_text("top secret")

    def fake_open(path, mode="r", *a, **k):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, mode, *a, **k)

    monkeypatch.setattr(readers, "open", fake_open, raising=False)
    assert input_error([p]) == f"{p}: permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_real(tmp_path: Path) -> None:
    p = tmp_path / "secret.txt"
    p.write_text("top secret")
    p.chmod(0)
    try:
        assert input_error([p]) == f"{p}: permission denied"
    finally:
        p.chmod(0o644)


# -------------------------------------------------------------------------------------------------- gzip


def test_gzip_detected_by_magic_not_extension(tmp_path: Path) -> None:
    text = "gzipped line\r\nand \u201cquotes\u201d\n"
    p = tmp_path / "notes.txt"  # no .gz extension
    p.write_bytes(gzip.compress(text.encode()))
    events = events_of([p])
    assert events[0].source.kind == "gzip"
    assert text_of(events) == text.replace("\r\n", "\n")
    assert events[-1].bytes_read == p.stat().st_size  # raw (compressed) bytes
    plain = tmp_path / "plain.gz"  # .gz extension, plain text inside
    plain.write_text("just text")
    assert events_of([plain])[0].source.kind == "text"


def test_gzip_cp1252_and_multimember_and_trailing_garbage(tmp_path: Path) -> None:
    p = tmp_path / "multi.gz"
    p.write_bytes(gzip.compress(b"first \x93member\x94\n") + gzip.compress(b"second\n") + b"\x00\x00junk")
    assert text_of(events_of([p])) == "first \u201cmember\u201d\nsecond\n"


def test_gzip_large_bomb_like_output_is_bounded(tmp_path: Path) -> None:
    p = tmp_path / "zeros.gz"
    p.write_bytes(gzip.compress(b"a" * (20 * 1024 * 1024), compresslevel=9))
    pieces = [len(e.text) for e in events_of([p]) if isinstance(e, TextPiece)]
    assert sum(pieces) == 20 * 1024 * 1024
    assert max(pieces) <= 65536


def test_truncated_gzip_explicit(tmp_path: Path) -> None:
    text = words(1_500_000, seed=2)
    blob = gzip.compress(text.encode())
    p = tmp_path / "cut.gz"
    p.write_bytes(blob[: len(blob) // 2])
    got: list[str] = []
    with pytest.raises(InputError) as info:
        for ev in read_sources([str(p)]):
            if isinstance(ev, TextPiece):
                got.append(ev.text)
    message = str(info.value)
    assert message.startswith(f"{p}: truncated or damaged gzip data (after ")
    n = int(message.rsplit("after ", 1)[1].split()[0])
    yielded = "".join(got)
    assert 0 < len(yielded) <= n < len(text)
    assert text.startswith(yielded)  # what was yielded before the error is correct and stays yielded


def test_damaged_gzip_small(tmp_path: Path) -> None:
    p = tmp_path / "bad.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage-garbage")
    assert input_error([p]) == f"{p}: truncated or damaged gzip data (after 0 bytes)"
    q = tmp_path / "crc.gz"
    blob = bytearray(gzip.compress(b"hello world\n"))
    blob[-8] ^= 0xFF  # CRC mismatch
    q.write_bytes(bytes(blob))
    assert input_error([q]).startswith(f"{q}: truncated or damaged gzip data (after ")


def test_gzip_empty_and_binary_content(tmp_path: Path) -> None:
    e = tmp_path / "empty.gz"
    e.write_bytes(gzip.compress(b""))
    assert input_error([e]) == f"{e}: empty file (nothing inside the gzip data)"
    b = tmp_path / "bin.tar.gz"
    b.write_bytes(gzip.compress(b"\x00" * 1000))
    assert input_error([b]) == f"{b}: binary file (inside the gzip data), not text"


# --------------------------------------------------------------------------------------------------- pdf


def test_handmade_pdf_pages_and_separators(tmp_path: Path) -> None:
    p = tmp_path / "doc.pdf"
    p.write_bytes(make_pdf(["First page (one)", "", "Third page"]))
    events = events_of([p])
    assert kinds_of(events) == ["SourceStart", "TextPiece", "TextPiece", "SourceDone"]
    assert events[0].source.kind == "pdf"
    assert events[1].text == "First page (one)"
    assert events[2].text == "\n\nThird page"
    assert events[3].pages == 3
    assert events[3].bytes_read == p.stat().st_size


def test_pdf_detected_after_leading_junk(tmp_path: Path) -> None:
    p = tmp_path / "junk-first"
    p.write_bytes(b"\n\n  " + make_pdf(["Hello PDF"]))
    events = events_of([p])
    assert events[0].source.kind == "pdf"
    assert text_of(events) == "Hello PDF"


def test_pdf_long_page_is_split(tmp_path: Path) -> None:
    p = tmp_path / "long.pdf"
    p.write_bytes(make_pdf(["word " * 200]))
    pieces = [e.text for e in events_of([p], chunk_chars=100) if isinstance(e, TextPiece)]
    assert len(pieces) > 5 and all(len(x) <= 100 for x in pieces)
    assert "".join(pieces) == ("word " * 200).strip()


def test_pdf_without_text_layer(tmp_path: Path) -> None:
    p = tmp_path / "scan.pdf"
    p.write_bytes(blank_pdf(3))
    assert input_error([p]) == f"{p}: no extractable text (scanned PDF?); OCR is not supported"


def test_pdf_encrypted_handmade(tmp_path: Path) -> None:
    p = tmp_path / "locked.pdf"
    p.write_bytes(encrypted_pdf(["Secret text"], user="pw", owner="owner"))
    assert input_error([p]) == f"{p}: encrypted PDF; give its password with --password"
    assert input_error([p], password="nope") == f"{p}: wrong password for encrypted PDF"
    assert text_of(events_of([p], password="pw")) == "Secret text"
    assert text_of(events_of([p], password="owner")) == "Secret text"


def test_pdf_owner_password_only_needs_no_password(tmp_path: Path) -> None:
    p = tmp_path / "restricted.pdf"
    p.write_bytes(encrypted_pdf(["Open to all"], user="", owner="owner"))
    assert text_of(events_of([p])) == "Open to all"
    assert text_of(events_of([p], password="whatever")) == "Open to all"


def test_password_ignored_for_plain_pdf(tmp_path: Path) -> None:
    p = tmp_path / "plain.pdf"
    p.write_bytes(make_pdf(["Plain"]))
    assert text_of(events_of([p], password="pw")) == "Plain"


def test_pdf_truncated(tmp_path: Path) -> None:
    blob = make_pdf(["Page one", "Page two", "Page three"])
    p = tmp_path / "cut.pdf"
    p.write_bytes(blob[: len(blob) * 2 // 3])
    message = input_error([p])
    assert message.startswith(f"{p}: truncated or damaged PDF, cannot be read (")


def test_pdf_damaged_garbage(tmp_path: Path) -> None:
    p = tmp_path / "garbage.pdf"
    p.write_bytes(b"%PDF-1.7\n" + bytes(random.Random(3).randrange(256) for _ in range(3000)) + b"%%EOF")
    message = input_error([p])
    assert message.startswith(f"{p}: damaged PDF, cannot be read (")


def test_pdf_bad_page_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    original = PageObject.extract_text
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("broken content stream")
        return original(self, *a, **k)

    monkeypatch.setattr(PageObject, "extract_text", flaky)
    p = tmp_path / "flaky.pdf"
    p.write_bytes(make_pdf(["One", "Two", "Three"]))
    events = events_of([p])
    assert text_of(events) == "One\n\nThree"
    assert events[-1].pages == 3


def test_pdf_every_page_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    def broken(self, *a, **k):
        raise KeyError("/Font")

    monkeypatch.setattr(PageObject, "extract_text", broken)
    p = tmp_path / "broken.pdf"
    p.write_bytes(make_pdf(["One", "Two"]))
    assert input_error([p]) == f"{p}: damaged PDF, text extraction failed on every page"


def test_pypdf_messages_do_not_reach_the_user(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "badxref.pdf"
    p.write_bytes(make_pdf(["Recovered text"], startxref_offset=7))  # pypdf warns, then repairs it
    caplog.set_level(logging.DEBUG)
    level_before = logging.getLogger("pypdf").level
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert text_of(events_of([p])) == "Recovered text"
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert not caught
    assert logging.getLogger("pypdf").level == level_before


# --------------------------------------------------------------------------------------------- corpus


def test_corpus_cp1252_book(corpus_root: Path) -> None:
    book = corpus_root / "books" / "war_and_peace.txt"
    events = read_sources([str(book)])
    first = next(events)
    assert first == SourceStart(SourceInfo(str(book), str(book), book.stat().st_size, "text"))
    piece = next(events)
    assert piece.text.startswith("\u201cWell, Prince, so Genoa and Lucca")
    assert "\ufffd" not in piece.text and "\u0093" not in piece.text
    rest = list(events)
    full = piece.text + text_of(rest)
    assert len(full) == book.stat().st_size  # cp1252 is one byte per character, no CRLF in the file
    assert "\ufffd" not in full
    assert rest[-1].bytes_read == book.stat().st_size


def test_corpus_encrypted_pdf(corpus_root: Path) -> None:
    pdf = corpus_root / "pdfs" / "libreoffice-writer-password.pdf"
    assert input_error([pdf]) == f"{pdf}: encrypted PDF; give its password with --password"
    assert input_error([pdf], password="wrong") == f"{pdf}: wrong password for encrypted PDF"
    text = text_of(events_of([pdf], password="openpassword"))
    assert text.startswith("Lorem ipsum dolor sit amet")


def test_corpus_unreadable_pdf(corpus_root: Path) -> None:
    # pypdf cannot even count its pages (/Pages points at a missing object): one line, no traceback
    pdf = corpus_root / "pdfs" / "unreadablemetadata.pdf"
    assert input_error([pdf]) == f"{pdf}: damaged PDF, cannot be read (Invalid object in /Pages)"


def test_corpus_geotopo_page_by_page_and_lazy(corpus_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    pdf = corpus_root / "pdfs" / "GeoTopo-komprimiert.pdf"
    original = PageObject.extract_text
    calls = {"n": 0}

    def counting(self, *a, **k):
        calls["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(PageObject, "extract_text", counting)
    events = read_sources([str(pdf)])
    assert isinstance(next(events), SourceStart)
    first = next(events)
    assert "Geometrie und Topologie" in first.text
    assert calls["n"] == 1  # lazy: one page extracted so far
    pieces = [first] + [e for e in events if isinstance(e, TextPiece)]
    assert calls["n"] == 117
    assert len(pieces) == 117  # one piece per page (every page of this book has text)
    assert all(p.text.startswith("\n\n") for p in pieces[1:])


def test_corpus_truncated_linearized_pdf_reads_all_pages(
    corpus_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # decision: when pypdf can still open a truncated PDF and find its pages, read them
    from pypdf import PageObject

    monkeypatch.setattr(PageObject, "extract_text", lambda self, *a, **k: "page")  # speed: pages, not text
    blob = (corpus_root / "pdfs" / "GeoTopo-komprimiert.pdf").read_bytes()
    p = tmp_path / "geo-cut.pdf"
    p.write_bytes(blob[: int(len(blob) * 0.9)])
    done = [e for e in events_of([p]) if isinstance(e, SourceDone)]
    assert done[0].pages == 117
    q = tmp_path / "geo-half.pdf"
    q.write_bytes(blob[: len(blob) // 2])
    assert input_error([q]).startswith(f"{q}: truncated or damaged PDF, cannot be read (")


# ------------------------------------------------------------------------------------------ directories


def build_mixed_dir(root: Path) -> Path:
    d = root / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "ch2.txt").write_text("chapter two\n")
    (d / "ch10.txt").write_text("chapter ten\n")
    (d / "ch1.txt").write_bytes(b"chapter \x93one\x94\n")
    (d / "empty.txt").write_bytes(b"")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (d / ".hidden.txt").write_text("never read")
    (d / ".git").mkdir()
    (d / ".git" / "config").write_text("never read")
    (d / "sub" / "a.gz").write_bytes(gzip.compress(b"zipped\n"))
    (d / "sub" / "scan.pdf").write_bytes(blank_pdf(1))
    (d / "sub" / "z.pdf").write_bytes(make_pdf(["pdf text"]))
    (d / "zz.txt").write_text("last\n")
    return d


def test_directory_mix(tmp_path: Path) -> None:
    d = build_mixed_dir(tmp_path)
    events = events_of([d])
    summary = [(type(e).__name__, getattr(e, "name", None) or e.source.name) for e in events]
    j = os.path.join
    assert summary == [
        ("SourceStart", j(d, "ch1.txt")),
        ("TextPiece", j(d, "ch1.txt")),
        ("SourceDone", j(d, "ch1.txt")),
        ("SourceStart", j(d, "ch2.txt")),
        ("TextPiece", j(d, "ch2.txt")),
        ("SourceDone", j(d, "ch2.txt")),
        ("SourceStart", j(d, "ch10.txt")),
        ("TextPiece", j(d, "ch10.txt")),
        ("SourceDone", j(d, "ch10.txt")),
        ("Skipped", j(d, "empty.txt")),
        ("Skipped", j(d, "image.png")),
        ("SourceStart", j(d, "sub", "a.gz")),
        ("TextPiece", j(d, "sub", "a.gz")),
        ("SourceDone", j(d, "sub", "a.gz")),
        ("Skipped", j(d, "sub", "scan.pdf")),
        ("SourceStart", j(d, "sub", "z.pdf")),
        ("TextPiece", j(d, "sub", "z.pdf")),
        ("SourceDone", j(d, "sub", "z.pdf")),
        ("SourceStart", j(d, "zz.txt")),
        ("TextPiece", j(d, "zz.txt")),
        ("SourceDone", j(d, "zz.txt")),
    ]
    reasons = {e.name: e.reason for e in events if isinstance(e, Skipped)}
    assert reasons == {
        j(d, "empty.txt"): "empty file",
        j(d, "image.png"): "binary file",
        j(d, "sub", "scan.pdf"): "no extractable text (scanned PDF?)",
    }
    assert text_of(events) == "chapter \u201cone\u201d\nchapter two\nchapter ten\nzipped\npdf text" + "last\n"
    assert [e.source.kind for e in events if isinstance(e, SourceStart)] == [
        "text",
        "text",
        "text",
        "gzip",
        "pdf",
        "text",
    ]


def test_directory_encrypted_pdf_and_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("fine")
    (d / "locked.pdf").write_bytes(encrypted_pdf(["x"], user="pw", owner="o"))
    (d / "secret.txt").write_text("hidden by permissions")
    real_open = open

    def fake_open(path, mode="r", *a, **k):
        if str(path).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(readers, "open", fake_open, raising=False)
    skipped = [e for e in events_of([d]) if isinstance(e, Skipped)]
    assert skipped == [
        Skipped(str(d / "locked.pdf"), "encrypted PDF; give its password with --password"),
        Skipped(str(d / "secret.txt"), "permission denied"),
    ]
    assert text_of(events_of([d], password="pw")) == "finex"


def test_directory_truncated_gzip_is_skipped_after_its_text(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    text = words(1_500_000, seed=4)
    blob = gzip.compress(text.encode())
    (d / "a.gz").write_bytes(blob[: len(blob) // 2])
    (d / "b.txt").write_text("after")
    events = events_of([d])
    names = kinds_of(events)
    assert names[0] == "SourceStart" and "SourceDone" not in names[: names.index("Skipped")]
    skip = events[names.index("Skipped")]
    assert skip.name == str(d / "a.gz")
    assert skip.reason.startswith("truncated or damaged gzip data (after ")
    assert text_of(events).endswith("after")
    assert isinstance(events[-1], SourceDone) and events[-1].source.name == str(d / "b.txt")


def test_directory_nothing_readable(tmp_path: Path) -> None:
    d = tmp_path / "junk"
    d.mkdir()
    (d / "empty").write_bytes(b"")
    (d / "bin").write_bytes(b"\x00\x01")
    with pytest.raises(InputError) as info:
        for _ in read_sources([str(d)]):
            pass
    assert str(info.value) == f"{d}/: no readable text files"
    e = tmp_path / "emptydir"
    e.mkdir()
    assert input_error([e]) == f"{e}/: no readable text files"


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    d = tmp_path / "loop"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("A")
    (d / "sub" / "b.txt").write_text("B")
    (d / "sub" / "back").symlink_to(d, target_is_directory=True)  # loop to the top
    (d / "sub" / "self").symlink_to(d / "sub" / "self")  # a link to itself
    (d / "sub" / "same.txt").symlink_to(d / "a.txt")  # the same file again
    events = events_of([d])
    assert text_of(events) == "AB"
    skipped = [e for e in events if isinstance(e, Skipped)]
    assert skipped == [
        Skipped(str(d / "sub" / "same.txt"), f"already read as {d / 'a.txt'}"),
        Skipped(str(d / "sub" / "self"), "symbolic link loop"),
    ]


def test_symlinked_directory_outside_is_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("outside")
    d = tmp_path / "d"
    d.mkdir()
    (d / "link").symlink_to(outside, target_is_directory=True)
    assert text_of(events_of([d])) == "outside"


def test_unlistable_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    (d / "locked").mkdir(parents=True)
    (d / "ok.txt").write_text("ok")
    real_scandir = os.scandir

    def fake_scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(readers.os, "scandir", fake_scandir)
    events = events_of([d])
    assert Skipped(str(d / "locked") + "/", "permission denied") in events
    assert text_of(events) == "ok"


def test_explicit_hidden_file_and_duplicates(tmp_path: Path) -> None:
    p = tmp_path / ".notes"
    p.write_text("hidden but named")
    events = events_of([p, p])
    assert text_of(events) == "hidden but named"
    assert events[-1] == Skipped(str(p), f"already read as {p}")


def test_file_then_its_directory(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("A")
    (d / "b.txt").write_text("B")
    events = events_of([d / "a.txt", d])
    assert text_of(events) == "AB"
    assert Skipped(str(d / "a.txt"), f"already read as {d / 'a.txt'}") in events


# ------------------------------------------------------------------------------------------------- stdin


def test_stdin_text() -> None:
    events = list(read_sources(["-"], stdin=io.BytesIO(b"from a pipe\r\n")))
    info = SourceInfo("<stdin>", None, None, "stdin")
    assert events[0] == SourceStart(info)
    assert text_of(events) == "from a pipe\n"
    assert events[-1].bytes_read == 13


def test_stdin_empty_binary_and_closed() -> None:
    with pytest.raises(InputError, match=r"^<stdin>: no input$"):
        list(read_sources(["-"], stdin=io.BytesIO(b"")))
    with pytest.raises(InputError, match=r"^<stdin>: binary data, not text$"):
        list(read_sources(["-"], stdin=io.BytesIO(b"\x00\x01\x02")))
    closed = io.BytesIO(b"data")
    closed.close()
    with pytest.raises(InputError, match=r"^<stdin>: no input$"):
        list(read_sources(["-"], stdin=closed))


def test_stdin_partial_data_then_broken_pipe() -> None:
    stdin = ChunkedStdin([b"partial ", b"\xe2\x82", b"\xac data"], error=BrokenPipeError(32, "Broken pipe"))
    assert text_of(read_sources(["-"], stdin=stdin)) == "partial \u20ac data"


def test_stdin_gzip_and_pdf() -> None:
    events = list(read_sources(["-"], stdin=io.BytesIO(gzip.compress(b"zipped stdin"))))
    assert events[0].source.kind == "stdin" and text_of(events) == "zipped stdin"
    pdf = make_pdf(["piped pdf", "page two"])
    stdin = ChunkedStdin([pdf[i : i + 100] for i in range(0, len(pdf), 100)])
    events = list(read_sources(["-"], stdin=stdin))
    assert text_of(events) == "piped pdf\n\npage two"
    assert events[-1].pages == 2 and events[-1].bytes_read == len(pdf)


def test_stdin_between_files(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("A")
    events = events_of([a, "-", a.parent / "a.txt"], stdin=io.BytesIO(b"S"))
    assert text_of(events) == "AS"


# ------------------------------------------------------------------------------------------- utilities


def test_expand_estimate_fingerprint(tmp_path: Path) -> None:
    d = build_mixed_dir(tmp_path)
    infos = expand_paths([str(d)])
    names = [os.path.relpath(i.name, d) for i in infos]
    assert names == [
        "ch1.txt",
        "ch2.txt",
        "ch10.txt",
        "image.png",
        "sub/a.gz",
        "sub/scan.pdf",
        "sub/z.pdf",
        "zz.txt",
    ]
    assert [i.kind for i in infos if i.name.endswith(("a.gz", "z.pdf"))] == ["gzip", "pdf"]
    total = sum(os.path.getsize(i.path) for i in infos)
    assert estimate_bytes([str(d)]) == total
    assert estimate_bytes([str(d), "-"]) is None
    assert estimate_bytes([str(tmp_path / "missing")]) == 0
    fp = fingerprint_sources([str(d)])
    assert fp is not None and [f[0] for f in fp] == [os.path.abspath(i.path) for i in infos]
    assert all(size == os.path.getsize(path) for path, size, _ in fp)
    assert fingerprint_sources(["-"]) is None
    (d / "zz.txt").write_text("changed, longer\n")
    assert fingerprint_sources([str(d)]) != fp
    with pytest.raises(InputError, match="no such file or directory"):
        expand_paths([str(tmp_path / "missing")])
    assert expand_paths(["-"]) == [SourceInfo("<stdin>", None, None, "stdin")]


def test_read_summary(tmp_path: Path) -> None:
    d = build_mixed_dir(tmp_path)
    summary = ReadSummary()
    events = list(summary.track(read_sources([str(d)])))
    assert summary.sources_read == 6
    assert len(summary.skipped) == 3
    assert summary.chars == len(text_of(events))
    assert summary.pages == 1


def test_named_pipe_is_read_as_a_stream(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    pdf = make_pdf(["through a pipe"])

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(pdf)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    events = events_of([fifo])
    thread.join(5)
    assert events[0].source == SourceInfo(str(fifo), str(fifo), None, "pdf")
    assert text_of(events) == "through a pipe"
    assert estimate_bytes([str(fifo)]) is None
