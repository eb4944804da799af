"""Streaming, lazy readers: turn the paths a user gives into a stream of events.

``read_sources(paths)`` yields, for every document it reads::

    SourceStart, TextPiece, TextPiece, ..., SourceDone

and a ``Skipped`` notice (one line) for every file inside a directory that it cannot or will not read.
Nothing is read before the consumer asks for the next event, and no file is ever held in memory whole:
text and gzip files are read in 64 KiB blocks, PDFs page by page.

Invariants the caller may rely on:

* ``SourceStart`` is only emitted once the first piece of text of that source is ready, so every
  ``SourceStart`` is followed by at least one ``TextPiece``.
* Every ``SourceStart`` is closed by exactly one ``SourceDone`` -- or, for a file inside a directory that
  breaks partway (a truncated ``.gz``), by a ``Skipped`` with the same name; the text already yielded
  stays yielded.  For an explicitly named file such a failure raises ``InputError`` instead.
* ``TextPiece.text`` is never empty and never longer than ``chunk_chars``.  Text pieces are cut at a
  newline (or else a space) in the second half of the window when there is one, so words are rarely split.
* Failures of explicitly named inputs raise ``InputError`` with one line ``"<name>: <reason>"``; failures
  of files found inside a directory become ``Skipped(name, reason)`` events.

Text decoding: UTF-8 (a BOM is stripped) when the first 64 KiB are valid UTF-8, else cp1252 with undefined
bytes mapped to U+FFFD.  If a UTF-8 file turns out invalid later on, the rest of it (from the first bad
byte) is decoded as cp1252.  A UTF-16 BOM selects UTF-16.  CRLF becomes LF (a lone CR is kept).
A file is binary when its first 8 KiB hold a NUL byte or more than 5% control characters (other than
tab, newline, vertical tab, form feed, carriage return, backspace and escape).

Kinds are detected by content, not by file name: ``%PDF-`` within the first 1 KiB is a PDF, the bytes
``1f 8b`` at the start are gzip (decompressed as a stream, multi-member files included; what follows the
last member is ignored), anything else is text.

Directories are walked recursively, depth first, in "natural" name order (``ch2`` before ``ch10``;
files and subdirectories interleaved by name).  Names starting with ``.`` are skipped silently.  Symbolic
links are followed, but a directory already walked (same device and inode) is never walked again, so a
symlink loop terminates; a file already read (same device and inode, e.g. a symlink to it or the same path
named twice) is skipped with a notice.

``SourceDone.sha256`` and ``bytes_read`` describe the raw bytes as stored (compressed bytes for gzip).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import stat
import sys
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from infinicli.errors import InputError, ResourceError, UsageError

if TYPE_CHECKING:
    from pypdf import PdfReader

T = TypeVar("T")

__all__ = [
    "Event",
    "ReadSummary",
    "Skipped",
    "SourceDone",
    "SourceInfo",
    "SourceStart",
    "TextPiece",
    "estimate_bytes",
    "expand_paths",
    "fingerprint_sources",
    "read_sources",
]

BLOCK_BYTES = 64 * 1024  # raw read size
SNIFF_BYTES = 64 * 1024  # how much (decompressed) data decides UTF-8 vs cp1252
BINARY_SNIFF_BYTES = 8 * 1024  # how much decides text vs binary
PDF_MAGIC_WINDOW = 1024
CONTROL_SHARE_LIMIT = 0.05
PDF_SPOOL_MEMORY = 32 * 1024 * 1024  # a PDF from a pipe is spooled; above this size, to a temporary file
STDIN_NAME = "<stdin>"

_CONTROL_RE = re.compile("[\x00-\x07\x0e-\x1a\x1c-\x1f\x7f]")
_NATURAL_RE = re.compile(r"(\d+)")


# --------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SourceInfo:
    """One document: ``name`` is what the user sees (the path as given, the joined path for directory
    members, ``"<stdin>"``); ``size`` is the size on disk (None when unknown); ``kind`` is one of
    ``"text"``, ``"gzip"``, ``"pdf"``, ``"stdin"``."""

    name: str
    path: str | None
    size: int | None
    kind: str


@dataclass(frozen=True)
class SourceStart:
    source: SourceInfo


@dataclass(frozen=True)
class TextPiece:
    """A chunk of decoded text.  For PDFs one page per piece (split only if a page exceeds ``chunk_chars``),
    every page after the first one that had text starting with a ``"\\n\\n"`` separator.

    ``raw_offset`` (not part of equality) is how many raw bytes of the source had been consumed when the
    piece was made -- compressed bytes for gzip, an estimate from the page number for PDFs -- for progress
    and ETA displays against ``SourceInfo.size``."""

    source: SourceInfo
    text: str
    raw_offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SourceDone:
    source: SourceInfo
    sha256: str
    bytes_read: int
    pages: int | None


@dataclass(frozen=True)
class Skipped:
    """A file (inside a directory) that was not read, or that broke partway; ``reason`` is short."""

    name: str
    reason: str


Event = SourceStart | TextPiece | SourceDone | Skipped


@dataclass
class ReadSummary:
    """Counts what a stream of events did; feed it every event with :meth:`add`."""

    sources_read: int = 0
    chars: int = 0
    bytes_read: int = 0
    pages: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def add(self, event: Event) -> None:
        if isinstance(event, TextPiece):
            self.chars += len(event.text)
        elif isinstance(event, SourceDone):
            self.sources_read += 1
            self.bytes_read += event.bytes_read
            self.pages += event.pages or 0
        elif isinstance(event, Skipped):
            self.skipped.append(event)

    def track(self, events: Iterable[Event]) -> Iterator[Event]:
        """Pass events through unchanged while counting them."""
        for event in events:
            self.add(event)
            yield event


# --------------------------------------------------------------------------------------------- errors


class _SourceError(Exception):
    """A source cannot be (further) read.  ``reason + hint`` goes into the InputError raised for an
    explicitly named input, ``notice`` (the reason, with the hint when it helps) into a Skipped event."""

    def __init__(self, reason: str, hint: str = "", *, hint_in_notice: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.notice = reason + hint if hint_in_notice else reason


def _one_line(text: str, limit: int = 120) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _os_reason(exc: OSError, path: str | None = None) -> str:
    code = exc.errno
    if code == errno.ENOENT:
        if path is not None and os.path.islink(path):
            return "broken symbolic link"
        return "no such file or directory"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ELOOP:
        return "symbolic link loop"
    if code == errno.ENOTDIR:
        return "not a directory"
    if code == errno.EISDIR:
        return "is a directory"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return _one_line(str(exc)) or type(exc).__name__


def _dir_name(path: str) -> str:
    return path if path.endswith(("/", os.sep)) else path + "/"


# ------------------------------------------------------------------------------------------ raw bytes


class _Hashing:
    """Reads a binary stream, hashing and counting the bytes.  ``lenient`` (stdin) turns read errors --
    a closed or broken pipe -- into end of input, so whatever arrived is still read."""

    def __init__(self, stream: BinaryIO, lenient: bool = False) -> None:
        self.stream = stream
        self.lenient = lenient
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, size: int = BLOCK_BYTES) -> bytes:
        try:
            data = self.stream.read(size)
        except (OSError, ValueError) as exc:
            if self.lenient:
                return b""
            if isinstance(exc, OSError):
                raise _SourceError(f"read error ({_os_reason(exc)})") from exc
            raise
        if not data:
            return b""
        data = bytes(data)
        self.sha.update(data)
        self.count += len(data)
        return data

    def read_full(self, size: int) -> bytes:
        """Read until ``size`` bytes or end of input (a pipe may return short reads)."""
        parts: list[bytes] = []
        got = 0
        while got < size:
            data = self.read(size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def blocks(self) -> Iterator[bytes]:
        while True:
            data = self.read(BLOCK_BYTES)
            if not data:
                return
            yield data

    def drain(self) -> None:
        for _ in self.blocks():
            pass


def _gunzip(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Stream-decompress gzip data (several members allowed) in output blocks of bounded size.  Data after
    the last member that does not start another member is ignored (but still read, so it is hashed)."""
    dec: zlib._Decompress | None = zlib.decompressobj(31)
    produced = 0
    between = b""  # bytes after a finished member, too few yet to tell whether another member follows
    ignoring = False
    for data in blocks:
        if ignoring:
            continue
        while True:
            if dec is None:
                data = between + data
                between = b""
                if len(data) < 2:
                    between = data
                    break
                if data[:2] != b"\x1f\x8b":
                    ignoring = True
                    break
                dec = zlib.decompressobj(31)
            try:
                out = dec.decompress(data, BLOCK_BYTES)
            except zlib.error as exc:
                raise _SourceError(f"truncated or damaged gzip data (after {produced} bytes)") from exc
            data = dec.unconsumed_tail
            if out:
                produced += len(out)
                yield out
            if dec.eof:
                data = dec.unused_data
                dec = None
                continue
            if not data and len(out) < BLOCK_BYTES:
                break  # all input consumed and no output pending: next block
    if dec is not None:
        raise _SourceError(f"truncated or damaged gzip data (after {produced} bytes)")


# ----------------------------------------------------------------------------------------------- text


def _looks_binary(sample: str) -> bool:
    if not sample:
        return False
    if "\x00" in sample:
        return True
    return len(_CONTROL_RE.findall(sample)) > CONTROL_SHARE_LIMIT * len(sample)


def _split_point(buf: str, pos: int, limit: int) -> int:
    """Where to cut ``buf[pos:]`` (longer than ``limit``) so the piece has at most ``limit`` chars."""
    hi = pos + limit
    lo = pos + limit // 2
    cut = buf.rfind("\n", lo, hi)
    if cut < 0:
        cut = buf.rfind(" ", lo, hi)
    return hi if cut < 0 else cut + 1


def _split_text(text: str, limit: int) -> Iterator[str]:
    pos = 0
    while len(text) - pos > limit:
        cut = _split_point(text, pos, limit)
        yield text[pos:cut]
        pos = cut
    if pos < len(text):
        yield text[pos:]


def _decode_text(blocks: Iterator[bytes], chunk_chars: int, noun: str, empty_reason: str) -> Iterator[str]:
    """Decode a stream of byte blocks into text pieces of at most ``chunk_chars`` characters."""
    sniff_parts: list[bytes] = []
    sniffed = 0
    exhausted = False
    while sniffed <= SNIFF_BYTES:  # one byte past the window tells whether more data follows it
        block = next(blocks, None)
        if block is None:
            exhausted = True
            break
        sniff_parts.append(block)
        sniffed += len(block)
    head = b"".join(sniff_parts)
    del sniff_parts
    if not head:
        raise _SourceError(empty_reason)

    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if utf16:
        sample = codecs.getincrementaldecoder("utf-16")("replace").decode(head[:BINARY_SNIFF_BYTES])
    else:
        sample = head[:BINARY_SNIFF_BYTES].decode("latin-1")
    if _looks_binary(sample):
        raise _SourceError(f"binary {noun}", ", not text")

    if utf16:
        mode = "utf-16"
    elif head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
        mode = "utf-8"
    else:
        window = head[:SNIFF_BYTES]
        mode = "utf-8" if _is_utf8_prefix(window, final=len(head) <= SNIFF_BYTES) else "cp1252"
    utf16_dec = codecs.getincrementaldecoder("utf-16")("replace") if utf16 else None

    pending = b""  # an incomplete UTF-8 sequence at the end of a block
    held_cr = False  # a CR at the end of a block: it may be half of a CRLF
    buf = ""
    emitted = False

    def decode(data: bytes, final: bool) -> str:
        nonlocal mode, pending
        if mode == "utf-16":
            assert utf16_dec is not None
            return utf16_dec.decode(data, final)
        if mode == "cp1252":
            return data.decode("cp1252", "replace")
        data = pending + data
        pending = b""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            good = data[: exc.start].decode("utf-8")
            if not final and exc.reason == "unexpected end of data" and exc.end == len(data):
                pending = data[exc.start :]
                return good
            mode = "cp1252"  # not UTF-8 after all: the rest is read as cp1252
            return good + data[exc.start :].decode("cp1252", "replace")

    def feed(data: bytes, final: bool) -> Iterator[str]:
        nonlocal held_cr, buf, emitted
        text = decode(data, final)
        if held_cr:
            text = "\r" + text
            held_cr = False
        if not final and text.endswith("\r"):
            text = text[:-1]
            held_cr = True
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
        buf = buf + text if buf else text
        pos = 0
        while len(buf) - pos > chunk_chars:
            cut = _split_point(buf, pos, chunk_chars)
            emitted = True
            yield buf[pos:cut]
            pos = cut
        buf = buf[pos:]
        if final and buf:
            emitted = True
            yield buf
            buf = ""

    yield from feed(head, final=exhausted)
    if not exhausted:
        for block in blocks:
            yield from feed(block, final=False)
        yield from feed(b"", final=True)
    if not emitted:
        raise _SourceError(empty_reason)


def _is_utf8_prefix(data: bytes, final: bool) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return not final and exc.reason == "unexpected end of data" and exc.end == len(data)


# ------------------------------------------------------------------------------------------------ pdf


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Keep pypdf's log messages and warnings away from the user (never held across a ``yield``)."""
    logger = logging.getLogger("pypdf")
    old_level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old_level)


def _pdf_open_reason(exc: Exception, truncated: bool) -> str:
    detail = _one_line(str(exc), 80) or type(exc).__name__
    if truncated:
        return f"truncated or damaged PDF, cannot be read ({detail})"
    return f"damaged PDF, cannot be read ({detail})"


def _has_eof_marker(stream: BinaryIO) -> bool:
    try:
        stream.seek(0, os.SEEK_END)
        end = stream.tell()
        stream.seek(max(0, end - 1024))
        tail = stream.read()
        stream.seek(0)
    except (OSError, ValueError):
        return True
    return b"%%EOF" in tail


# -------------------------------------------------------------------------------------------- walking


def _natural_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    parts = _NATURAL_RE.split(name)
    key = tuple((0, int(p)) if p.isdigit() else (1, p.casefold()) for p in parts if p)
    return key, name


def _sorted_entries(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        entries = list(it)
    entries.sort(key=lambda e: _natural_key(e.name))
    return entries


@dataclass
class _Found:
    """A regular file found inside a directory."""

    path: str
    st: os.stat_result


def _walk_dir(top: str, seen_dirs: set[tuple[int, int]]) -> Iterator[_Found | Skipped]:
    """Files under directory ``top`` (already listed in ``seen_dirs`` by the caller) in reading order;
    raises OSError when ``top`` itself cannot be listed."""
    stack: list[Iterator[os.DirEntry[str]]] = [iter(_sorted_entries(top))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = entry.path
        try:
            st = os.stat(path)
        except OSError as exc:
            yield Skipped(path, _os_reason(exc, path))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue  # a symlink back into a directory already walked (a loop) or walked elsewhere
            seen_dirs.add(key)
            try:
                stack.append(iter(_sorted_entries(path)))
            except OSError as exc:
                yield Skipped(_dir_name(path), _os_reason(exc, path))
        elif stat.S_ISREG(st.st_mode):
            yield _Found(path, st)
        else:
            yield Skipped(path, "not a regular file")


def _candidates(paths: Sequence[str]) -> Iterator[tuple[str, os.stat_result | None]]:
    """(path, stat) for every file ``read_sources`` would try, stat None for stdin and missing paths.
    Never raises for missing or unreadable paths."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for arg in paths:
        if arg == "-":
            yield arg, None
            continue
        try:
            st = os.stat(arg)
        except OSError:
            yield arg, None
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            try:
                for item in _walk_dir(arg, seen_dirs):
                    if isinstance(item, _Found):
                        fkey = (item.st.st_dev, item.st.st_ino)
                        if fkey not in seen_files and item.st.st_size > 0:
                            seen_files.add(fkey)
                            yield item.path, item.st
            except OSError:
                continue
        else:
            fkey = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode):
                if fkey in seen_files:
                    continue
                seen_files.add(fkey)
            yield arg, st


def _sniff_kind(path: str) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(PDF_MAGIC_WINDOW)
    except OSError:
        return "text"
    if b"%PDF-" in head:
        return "pdf"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return "text"


def expand_paths(paths: Sequence[str]) -> list[SourceInfo]:
    """The files ``read_sources`` would try, in its order, with kinds sniffed from their first bytes
    (binary or unreadable files are still listed: only reading tells).  Raises InputError for an
    explicitly named path that does not exist."""
    out: list[SourceInfo] = []
    for path, st in _candidates(paths):
        if path == "-":
            out.append(SourceInfo(STDIN_NAME, None, None, "stdin"))
        elif st is None:
            try:
                os.stat(path)
            except OSError as exc:
                raise InputError(f"{path}: {_os_reason(exc, path)}") from None
        elif stat.S_ISREG(st.st_mode):
            out.append(SourceInfo(path, path, st.st_size, _sniff_kind(path)))
        else:
            out.append(SourceInfo(path, path, None, "text"))
    return out


def estimate_bytes(paths: Sequence[str]) -> int | None:
    """Total bytes on disk of what ``read_sources(paths)`` would read, for an ETA; None when unknown
    (stdin, a pipe).  Cheap: only ``stat`` calls and directory listings; never raises."""
    total = 0
    for path, st in _candidates(paths):
        if path == "-":
            return None
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            return None
        total += st.st_size
    return total


def fingerprint_sources(paths: Sequence[str]) -> list[tuple[str, int, int]] | None:
    """A cheap identity of the inputs for a cache key: ``(absolute path, size, mtime_ns)`` per file in
    reading order.  None when an input has no stable identity (stdin, a pipe).  Missing paths are left
    out (reading them fails anyway); never raises."""
    out: list[tuple[str, int, int]] = []
    for path, st in _candidates(paths):
        if path == "-":
            return None
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            return None
        out.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return out


# -------------------------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, password: str | None, stdin: BinaryIO | None, chunk_chars: int) -> None:
        self.password = password
        self.stdin = stdin
        self.chunk_chars = chunk_chars
        self.seen_files: dict[tuple[int, int], str] = {}
        self.seen_dirs: set[tuple[int, int]] = set()

    # -- one source

    def _events(
        self, name: str, path: str | None, size: int | None, stream: BinaryIO, is_stdin: bool
    ) -> Iterator[Event]:
        raw = _Hashing(stream, lenient=is_stdin)
        head = raw.read_full(max(SNIFF_BYTES, PDF_MAGIC_WINDOW))
        if not head:
            raise _SourceError("no input" if is_stdin else "empty file")
        noun = "data" if is_stdin else "file"
        if b"%PDF-" in head[:PDF_MAGIC_WINDOW]:
            info = SourceInfo(name, path, size, "stdin" if is_stdin else "pdf")
            yield from self._pdf_events(info, raw, head, stream)
            return
        if head[:2] == b"\x1f\x8b":
            kind = "gzip"
            blocks = _gunzip(_prepend(head, raw.blocks()))
            empty = "empty file (nothing inside the gzip data)"
            noun = f"{noun} (inside the gzip data)"
        else:
            kind = "text"
            blocks = _prepend(head, raw.blocks())
            empty = "no input" if is_stdin else "empty file"
        info = SourceInfo(name, path, size, "stdin" if is_stdin else kind)
        started = False
        for text in _decode_text(blocks, self.chunk_chars, noun, empty):
            if not started:
                yield SourceStart(info)
                started = True
            yield TextPiece(info, text, raw.count)
        raw.drain()
        yield SourceDone(info, raw.sha.hexdigest(), raw.count, None)

    def _pdf_events(self, info: SourceInfo, raw: _Hashing, head: bytes, stream: BinaryIO) -> Iterator[Event]:
        seekable = False
        if info.kind != "stdin":  # stdin is always spooled: its position need not be 0
            try:
                seekable = stream.seekable()
            except (OSError, ValueError, AttributeError):
                seekable = False
        spool: BinaryIO | None = None
        if seekable:
            raw.drain()  # hash the whole file first; pypdf then reads it with seeks
            stream.seek(0)
            pdf_stream = stream
        else:
            spool = tempfile.SpooledTemporaryFile(max_size=PDF_SPOOL_MEMORY)
            try:
                spool.write(head)
                for block in raw.blocks():
                    spool.write(block)
            except OSError as exc:
                spool.close()
                raise ResourceError(f"{info.name}: cannot buffer the PDF ({_os_reason(exc)})") from exc
            spool.seek(0)
            pdf_stream = spool
        try:
            yield from self._pdf_pages(info, raw, pdf_stream)
        finally:
            if spool is not None:
                spool.close()

    def _pdf_pages(self, info: SourceInfo, raw: _Hashing, stream: BinaryIO) -> Iterator[Event]:
        name = info.name
        truncated = not _has_eof_marker(stream)
        with _quiet_pypdf():
            import pypdf
            from pypdf.errors import DependencyError

            try:
                reader = pypdf.PdfReader(stream, strict=False)
                if reader.is_encrypted:
                    self._pdf_decrypt(reader)
                n_pages = len(reader.pages)
            except _SourceError:
                raise
            except DependencyError as exc:
                raise _SourceError(
                    "encrypted PDF needs the 'cryptography' package", "; install it: pip install cryptography"
                ) from exc
            except MemoryError as exc:
                raise ResourceError(f"{name}: out of memory while opening the PDF") from exc
            except Exception as exc:  # pypdf raises all kinds of errors on damaged files
                raise _SourceError(_pdf_open_reason(exc, truncated)) from exc
        if n_pages == 0:
            raise _SourceError("PDF has no pages")

        started = False
        failed = 0
        size = info.size or raw.count
        for index in range(n_pages):
            text: str | None = None
            with _quiet_pypdf():
                try:
                    text = reader.pages[index].extract_text()
                except MemoryError as exc:
                    raise ResourceError(f"{name}: out of memory on page {index + 1}") from exc
                except Exception:  # one bad page does not spoil the others
                    failed += 1
            if not text:
                continue
            text = text.replace("\r\n", "\n").rstrip().lstrip("\n")
            if not text.strip():
                continue
            if started:
                text = "\n\n" + text
            else:
                yield SourceStart(info)
                started = True
            offset = size * (index + 1) // n_pages
            for piece in _split_text(text, self.chunk_chars):
                yield TextPiece(info, piece, offset)
        if not started:
            if failed == n_pages:
                raise _SourceError("damaged PDF, text extraction failed on every page")
            raise _SourceError("no extractable text (scanned PDF?)", "; OCR is not supported")
        yield SourceDone(info, raw.sha.hexdigest(), raw.count, n_pages)

    def _pdf_decrypt(self, reader: PdfReader) -> None:
        from pypdf import PasswordType

        if reader.decrypt("") != PasswordType.NOT_DECRYPTED:
            return  # only an owner password: readable by anyone
        if self.password is None:
            raise _SourceError("encrypted PDF", "; give its password with --password", hint_in_notice=True)
        if reader.decrypt(self.password) == PasswordType.NOT_DECRYPTED:
            raise _SourceError("wrong password for encrypted PDF")

    # -- explicit inputs and directories

    def _guarded(self, events: Iterator[Event], name: str, explicit: bool) -> Iterator[Event]:
        """Turn a source's failure into InputError (explicit) or a Skipped notice (inside a directory)."""
        try:
            yield from events
        except _SourceError as exc:
            if explicit:
                raise InputError(f"{name}: {exc.reason}{exc.hint}") from None
            yield Skipped(name, exc.notice)

    def _file(self, path: str, st: os.stat_result, explicit: bool) -> Iterator[Event]:
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in self.seen_files:
                yield Skipped(path, f"already read as {self.seen_files[key]}")
                return
            self.seen_files[key] = path
            size: int | None = st.st_size
        else:
            size = None  # a pipe or device named explicitly, e.g. <(zcat x.gz)
        try:
            stream = open(path, "rb")  # closed below, after the lazy read
        except OSError as exc:
            reason = _os_reason(exc, path)
            if explicit:
                raise InputError(f"{path}: {reason}") from None
            yield Skipped(path, reason)
            return
        with stream:
            yield from self._guarded(self._events(path, path, size, stream, False), path, explicit)

    def _stdin(self) -> Iterator[Event]:
        stream = self.stdin
        if stream is None:
            stream = getattr(sys.stdin, "buffer", None) or io.BytesIO()  # no stdin at all: no input
        yield from self._guarded(self._events(STDIN_NAME, None, None, stream, True), STDIN_NAME, True)

    def _directory(self, path: str, st: os.stat_result) -> Iterator[Event]:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            yield Skipped(_dir_name(path), "directory already read")
            return
        self.seen_dirs.add(key)
        produced = False
        try:
            items = _walk_dir(path, self.seen_dirs)
            first = next(items, None)
        except OSError as exc:
            raise InputError(f"{_dir_name(path)}: {_os_reason(exc, path)}") from None
        if first is not None:
            for item in _prepend(first, items):
                if isinstance(item, Skipped):
                    yield item
                    continue
                if item.st.st_size == 0:
                    yield Skipped(item.path, "empty file")
                    continue
                for event in self._file(item.path, item.st, explicit=False):
                    if isinstance(event, SourceStart):
                        produced = True
                    yield event
        if not produced:
            raise InputError(f"{_dir_name(path)}: no readable text files")

    def run(self, paths: Sequence[str]) -> Iterator[Event]:
        produced = False
        for arg in paths:
            if arg == "-":
                events = self._stdin()
            else:
                try:
                    st = os.stat(arg)
                except OSError as exc:
                    raise InputError(f"{arg}: {_os_reason(exc, arg)}") from None
                if stat.S_ISDIR(st.st_mode):
                    events = self._directory(arg, st)
                else:
                    events = self._file(arg, st, explicit=True)
            for event in events:
                if isinstance(event, SourceStart):
                    produced = True
                yield event
        if not produced:
            raise InputError(f"no readable text in {', '.join(paths)}")


def _prepend(first: T, rest: Iterator[T]) -> Iterator[T]:
    yield first
    yield from rest


def read_sources(
    paths: Sequence[str],
    *,
    password: str | None = None,
    stdin: BinaryIO | None = None,
    chunk_chars: int = 65536,
) -> Iterator[Event]:
    """Lazily read ``paths`` (files, directories, ``"-"`` for stdin) as a stream of events.

    Argument errors (no paths, ``"-"`` twice, ``chunk_chars < 1``) raise at once; everything else happens
    while iterating: see the module docstring for the events and the errors."""
    paths = list(paths)
    if not paths:
        raise UsageError("no input given")
    if paths.count("-") > 1:
        raise UsageError("'-' (standard input) given more than once")
    if chunk_chars < 1:
        raise UsageError(f"chunk size must be at least 1 character, not {chunk_chars}")
    return _Reader(password, stdin, chunk_chars).run(paths)
