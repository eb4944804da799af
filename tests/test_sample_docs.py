"""The committed ``sample_docs/`` are exactly what ``scripts/make_sample_docs.py`` generates, and the facts
listed in ``sample_docs/FACTS.md`` can really be found in them."""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_docs"


def load_script() -> ModuleType:
    from conftest import load_script as load

    return load("make_sample_docs")


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def source_text(rel: str) -> str:
    """The text a reader would get from one sample document, with whitespace runs made single spaces."""
    path = SAMPLES / rel
    if rel.endswith(".pdf"):
        from pypdf import PdfReader

        text = "\n".join(page.extract_text() for page in PdfReader(path).pages)
    elif rel.endswith(".gz"):
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    else:
        text = path.read_text("utf-8")
    return " ".join(text.split())


def facts_table() -> list[dict[str, str]]:
    rows = []
    for line in (SAMPLES / "FACTS.md").read_text("utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append(dict(zip(["n", "source", "question", "answer", "where"], cells, strict=True)))
    return rows


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    if not SAMPLES.is_dir():
        pytest.skip("sample_docs/ is not present")
    assert load_script().main([str(tmp_path), "--quiet"]) == 0
    made, committed = files_under(tmp_path), files_under(SAMPLES)
    assert sorted(made) == sorted(committed)
    for rel, data in made.items():
        if rel.endswith(".gz"):
            # the gzip header is fixed (no name, mtime 0); the deflate bytes could differ with another zlib
            assert data[:10] == committed[rel][:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
            assert gzip.decompress(data) == gzip.decompress(committed[rel]), rel
        else:
            assert data == committed[rel], f"{rel} differs from the generator's output; rerun the script"


def test_generator_is_deterministic() -> None:
    mod = load_script()
    first, _ = mod.build()
    second, _ = mod.build()
    assert first == second


def test_pdf_has_pages_with_extractable_text() -> None:
    from pypdf import PdfReader

    mod = load_script()
    _pdf, page_lines, _facts = mod.make_report(random.Random(mod.SEED + 1))
    reader = PdfReader(SAMPLES / "field_report.pdf")
    assert len(reader.pages) >= 4
    assert len(reader.pages) == len(page_lines)
    for page, lines in zip(reader.pages, page_lines, strict=True):
        extracted = set(page.extract_text().split())
        written = set(" ".join(lines).split())
        assert written <= extracted, sorted(written - extracted)[:10]
    assert "Turbine 14 showed a cracked blade root." in source_text("field_report.pdf")


def test_facts_are_in_the_documents() -> None:
    rows = facts_table()
    assert len(rows) >= 10
    texts: dict[str, str] = {}
    for row in rows:
        text = texts.setdefault(row["source"], source_text(row["source"]))
        spans = re.findall(r"`([^`]+)`", row["answer"])
        assert spans, row
        for span in spans:
            assert span in text, (row["question"], span)
    sources = {row["source"] for row in rows}
    assert {"harbor_chronicle.txt", "field_report.pdf", "logs/db.log", "logs/worker.log.gz"} <= sources


def test_chronicle_facts_are_unique_and_spread_out() -> None:
    mod = load_script()
    _files, facts = mod.build()
    text = (SAMPLES / "harbor_chronicle.txt").read_text("utf-8")
    assert 60_000 <= len(text.encode()) <= 80_000
    positions = []
    for fact in facts:
        if fact.source == "harbor_chronicle.txt":
            assert text.count(fact.evidence) == 1, fact.evidence
            positions.append(text.index(fact.evidence) / len(text))
    assert positions == sorted(positions)
    assert positions[0] < 0.1 and 0.35 < positions[len(positions) // 2] < 0.65 and positions[-2] > 0.75
    last = facts[len(positions) - 1].evidence
    assert len(text) - text.index(last) < 400 * 4  # inside the last ~400 tokens


def test_logs_tell_the_incident_in_order() -> None:
    db = (SAMPLES / "logs" / "db.log").read_text("utf-8").splitlines()
    web = (SAMPLES / "logs" / "web.log").read_text("utf-8").splitlines()
    worker = gzip.decompress((SAMPLES / "logs" / "worker.log.gz").read_bytes()).decode().splitlines()
    for lines in (db, web, worker):
        assert 150 <= len(lines) <= 400
    first_db = next(ln for ln in db if re.search(r"ERROR|FATAL|PANIC|No space", ln))
    first_500 = next(ln for ln in web if '" 500 ' in ln)
    first_retry = next(ln for ln in worker if "WARNING" in ln or "ERROR" in ln)
    assert "No space left on device" in first_db and " 14:23:07." in first_db
    t_db = first_db.split()[1][:8]
    t_web = re.search(r":(\d\d:\d\d:\d\d) ", first_500).group(1)
    t_worker = first_retry.split()[1][:8]
    assert t_db < t_web < t_worker
    assert '" 500 ' not in " ".join(web[-50:]) and "WARNING" not in " ".join(worker[-30:])
