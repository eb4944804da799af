"""Bad input at the command line: one clear line on stderr, a documented exit code, nothing else broken."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
from pathlib import Path

import pytest
from test_readers import blank_pdf, encrypted_pdf, make_pdf

GOOD = "The lighthouse keeper was Ilse Marrow. " * 30


def one_error(err: str) -> str:
    """Exactly one error line, no traceback; returns it."""
    lines = [ln for ln in err.splitlines() if ln.startswith("infini: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def ask(run, *paths, q="Who kept the lighthouse?", **kw):
    return run("ask", *map(str, paths), q, "--max-new-tokens", "2", **kw)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.txt", b"", "empty file"),
        ("blob.bin", bytes(range(256)) * 8, "binary file"),
        (
            "cut.gz",
            gzip.compress(" ".join(map(str, range(20000))).encode())[:3000],
            "truncated or damaged gzip",
        ),
        ("scan.pdf", blank_pdf(2), "no extractable text"),
        ("cut.pdf", make_pdf(["page one text", "page two text"])[:200], "PDF"),
    ],
)
def test_unreadable_files_exit_3(run, tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    code, out, err = ask(run, p)
    assert code == 3 and out == ""
    line = one_error(err)
    assert message in line and name in line


def test_missing_path_exit_3(run, tmp_path):
    code, _, err = ask(run, tmp_path / "nope.txt")
    assert code == 3 and "no such file or directory" in one_error(err)


def test_non_utf8_text_is_read(run, tmp_path):
    p = tmp_path / "cp1252.txt"
    p.write_bytes("“Curly quotes” – café. ".encode("cp1252") * 40)
    code, out, err = ask(run, p, "--json")
    assert code == 0, err
    assert json.loads(out)["tokens_read"] > 100


def test_encrypted_pdf_needs_password(run, tmp_path):
    p = tmp_path / "secret.pdf"
    p.write_bytes(encrypted_pdf(["The secret page says hello."] * 2, user="pw", owner="owner"))
    code, _, err = ask(run, p)
    assert code == 3 and "--password" in one_error(err)
    code, _, err = ask(run, p, "--password", "wrong")
    assert code == 3 and "wrong password" in one_error(err)
    code, out, err = ask(run, p, "--password", "pw", "--json")
    assert code == 0, err
    assert json.loads(out)["sources"][0]["kind"] == "pdf"


def test_corpus_pdfs(run, corpus):
    code, _, err = ask(run, corpus / "pdfs" / "unreadablemetadata.pdf")
    assert code == 3 and "damaged PDF" in one_error(err)
    code, _, err = ask(run, corpus / "pdfs" / "libreoffice-writer-password.pdf")
    assert code == 3 and "password" in one_error(err)
    code, out, err = ask(
        run, corpus / "pdfs" / "libreoffice-writer-password.pdf", "--password", "openpassword", "--json"
    )
    assert code == 0, err
    code, out, err = ask(run, corpus / "pdfs" / "GeoTopo-komprimiert.pdf", "--json")
    assert code == 0, err
    src = json.loads(out)["sources"][0]
    assert src["pages"] == 117 and src["kind"] == "pdf"


def test_folder_mixing_good_and_bad_files(run, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a.txt").write_text(GOOD)
    (d / "b.bin").write_bytes(b"\x00\x01\x02" * 100)
    (d / "c.txt").write_bytes(b"")
    (d / "d.log.gz").write_bytes(gzip.compress(GOOD.encode()))
    (d / "loop").symlink_to(d)  # a symlink loop must not hang
    code, out, err = ask(run, d, "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert [Path(s["name"]).name for s in obj["sources"]] == ["a.txt", "d.log.gz"]
    reasons = {Path(s["name"]).name: s["reason"] for s in obj["skipped"]}
    assert set(reasons) == {"b.bin", "c.txt"}
    assert "binary" in reasons["b.bin"] and "empty" in reasons["c.txt"]
    notices = [ln for ln in err.splitlines() if ln.startswith("infini: skipped")]
    assert len(notices) == 2 and "b.bin" in notices[0] and "c.txt" in notices[1]
    assert "read 2 source(s)" in err and "skipped 2" in err  # the closing account


def test_stdin_empty_and_binary(run):
    code, _, err = run("ask", "q", stdin=b"")
    assert code == 3 and "no input" in one_error(err)
    code, _, err = run("ask", "q", stdin=b"\x00\xff\x00binary" * 100)
    assert code == 3 and "binary" in one_error(err)


def test_usage_and_model_errors(run, tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(GOOD)
    code, _, err = ask(run, p, q="")
    assert code == 2 and "question is empty" in one_error(err)
    code, _, err = run("ask", str(p), "q", "--model", "nonexistent-model", model=False)
    assert code == 4 and "unknown model" in one_error(err)
    empty_model = tmp_path / "model-without-weights"
    empty_model.mkdir()
    (empty_model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (empty_model / "tokenizer.json").write_text("{}")
    code, _, err = run("ask", str(p), "q", "--model", str(empty_model), model=False)
    assert code == 4 and "no weights" in one_error(err)


@pytest.fixture
def memfile(run, tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(GOOD)
    mem = tmp_path / "a.mem"
    assert run("read", str(p), "-o", str(mem))[0] == 0
    return mem


def test_memory_file_from_newer_format_is_refused(run, memfile):
    from infinicli.memfile import load_memory, save_memory

    memory, tail, meta = load_memory(memfile)
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "saved_at")}
    import infinicli.memfile as mf

    orig = mf.FORMAT_VERSION
    mf.FORMAT_VERSION = orig + 1
    try:
        save_memory(memfile, memory, tail, meta)
    finally:
        mf.FORMAT_VERSION = orig
    code, _, err = ask(run, memfile)
    assert code == 3 and "newer" in one_error(err)


def test_disk_full_keeps_the_old_memory_file(run, memfile, tmp_path, monkeypatch):
    before = memfile.read_bytes()
    p = tmp_path / "b.txt"
    p.write_text(GOOD * 2)
    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr("infinicli.memfile.os.fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    code, _, err = run("read", str(p), "-o", str(memfile), "--no-cache")
    assert code == 5 and "disk full" in one_error(err)
    assert memfile.read_bytes() == before  # the old file is intact
    assert not [f for f in memfile.parent.iterdir() if f.name.endswith(".tmp")]  # no litter


def test_read_only_folder_is_a_resource_error(run, memfile, tmp_path, monkeypatch):
    def denied(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("infinicli.memfile.tempfile.mkstemp", denied)
    p = tmp_path / "a.txt"
    code, _, err = run("read", str(p), "-o", str(tmp_path / "ro" / "x.mem"))
    assert code == 5 and "cannot write" in one_error(err)


def test_ctrl_c_checkpoints_and_resume_finishes(run, tmp_path, monkeypatch):
    p = tmp_path / "long.txt"
    p.write_text(GOOD * 20)
    from infinicli.engine import Engine

    orig = Engine.write_segment
    calls = {"n": 0}

    def interrupt(self, state, n):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return orig(self, state, n)

    monkeypatch.setattr(Engine, "write_segment", interrupt)
    code, out, err = run("read", str(p), "-o", str(tmp_path / "m.mem"))
    assert code == 130 and "--resume" in err and out == ""
    monkeypatch.setattr(Engine, "write_segment", orig)
    code, out, err = run("read", str(p), "-o", str(tmp_path / "m.mem"), "--resume", "--json")
    assert code == 0, err
    assert "resuming after" in err
    assert json.loads(out)["tokens_read"] > 1000


def test_no_pickle_and_no_remote_code_in_the_package():
    """Security guard: user files and weights load through safetensors only; no remote code."""
    src = Path(__file__).resolve().parent.parent / "infinicli"
    for f in src.rglob("*.py"):
        text = f.read_text()
        for bad in ("torch.load(", "pickle.load", "trust_remote_code=True"):
            assert bad not in text, f"{f}: {bad}"
