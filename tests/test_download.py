"""`ser data download ravdess` against a local Zenodo stand-in (http.server on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from ser_core import datasets
from ser_core.download import ARCHIVE, download_ravdess
from ser_core.errors import DownloadError

ROOT = Path(__file__).resolve().parents[1]
CLIPS_PER_ACTOR = 2


class FakeZenodo:
    """Serves ``/api/records/1188976`` (record JSON) and the archive, honouring Range requests."""

    def __init__(self, archive: bytes, md5: str | None = None):
        self.archive = archive
        self.md5 = md5 or hashlib.md5(archive).hexdigest()
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                if self.path == "/api/records/1188976":
                    body = json.dumps(owner.record()).encode()
                    self._send(200, body, "application/json")
                elif self.path == "/api/records/other":
                    body = json.dumps({"files": owner.record()["files"][:1]}).encode()
                    self._send(200, body, "application/json")
                elif self.path == f"/api/records/1188976/files/{ARCHIVE}/content":
                    self._send_archive()
                else:
                    self._send(404, b"not found", "text/plain")

            def _send_archive(self):
                data, rng = owner.archive, self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self._send(416, b"", "text/plain")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    body = data[start:]
                else:
                    self.send_response(200)
                    body = data
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/records/1188976"

    def record(self) -> dict:
        """The shape of Zenodo's record JSON (only the fields the downloader reads, plus a neighbour file)."""
        content = f"{self.base}/api/records/1188976/files/{ARCHIVE}/content"
        return {"id": 1188976, "metadata": {"title": "RAVDESS"}, "files": [
            {"key": "Video_Speech_Actor_01.zip", "size": 1, "checksum": "md5:00",
             "links": {"self": f"{self.base}/nothing"}},
            {"key": ARCHIVE, "size": len(self.archive), "checksum": f"md5:{self.md5}",
             "links": {"self": content, "content": content}},
        ]}

    def range_requests(self) -> list[str]:
        return [r for p, r in self.requests if r and p.endswith("/content")]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ravdess_zip(tmp_path_factory, samples_dir) -> bytes:
    """A small archive laid out like Audio_Speech_Actors_01-24.zip: Actor_XX/<name>.wav."""
    out = tmp_path_factory.mktemp("zip") / ARCHIVE
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for actor in (1, 2, 3, 4):
            clips = sorted(samples_dir.glob(f"*-{actor:02d}.flac"))[:CLIPS_PER_ACTOR]
            for clip in clips:
                y, sr = sf.read(clip, dtype="int16")
                wav = out.parent / f"{clip.stem}.wav"
                sf.write(wav, y, sr, subtype="PCM_16")
                zf.write(wav, f"Actor_{actor:02d}/{clip.stem}.wav")
    return out.read_bytes()


def assert_corpus(dest: Path) -> None:
    df = datasets.load_ravdess(dest)
    assert sorted(df["actor"].unique()) == [1, 2, 3, 4]
    assert len(df) == 4 * CLIPS_PER_ACTOR
    assert not list(dest.glob("*.zip*")), "archive and partial download are removed after unpacking"
    assert not list(dest.glob(".unpack-*"))


def test_full_download_unpacks_actor_folders(tmp_path, ravdess_zip):
    with FakeZenodo(ravdess_zip) as srv:
        got = download_ravdess(tmp_path / "ravdess", api_url=srv.api_url, progress=False)
    assert got == tmp_path / "ravdess"
    assert sorted(p.name for p in got.iterdir()) == ["Actor_01", "Actor_02", "Actor_03", "Actor_04"]
    assert_corpus(got)
    assert srv.range_requests() == []


def test_resume_from_partial_download_uses_range(tmp_path, ravdess_zip):
    dest = tmp_path / "ravdess"
    dest.mkdir()
    cut = len(ravdess_zip) // 3
    (dest / f"{ARCHIVE}.part").write_bytes(ravdess_zip[:cut])
    with FakeZenodo(ravdess_zip) as srv:
        download_ravdess(dest, api_url=srv.api_url, progress=False)
    assert srv.range_requests() == [f"bytes={cut}-"]
    assert_corpus(dest)


def test_checksum_mismatch_fails_and_unpacks_nothing(tmp_path, ravdess_zip):
    dest = tmp_path / "ravdess"
    with FakeZenodo(ravdess_zip, md5="0" * 32) as srv, pytest.raises(DownloadError) as err:
        download_ravdess(dest, api_url=srv.api_url, progress=False)
    assert "checksum" in str(err.value) and "\n" not in str(err.value)
    assert not list(dest.glob("Actor_*"))
    assert not (dest / f"{ARCHIVE}.part").exists(), "a damaged download is not resumed later"


def test_unsafe_archive_entry_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("Actor_01/03-01-01-01-01-01-01.wav", b"x")
        zf.writestr("../escape.txt", b"gotcha")
    dest = tmp_path / "sub" / "ravdess"
    with FakeZenodo(bad.read_bytes()) as srv, pytest.raises(DownloadError, match="unsafe entry"):
        download_ravdess(dest, api_url=srv.api_url, progress=False)
    assert not (tmp_path / "sub" / "escape.txt").exists() and not (dest.parent / "escape.txt").exists()
    assert not list(dest.glob("Actor_*"))


def test_not_a_zip_is_a_clear_error(tmp_path):
    with FakeZenodo(b"this is no zip archive" * 100) as srv, pytest.raises(DownloadError, match="not a valid zip"):
        download_ravdess(tmp_path / "d", api_url=srv.api_url, progress=False)


def test_network_failure_is_a_clear_error(tmp_path, ravdess_zip):
    with FakeZenodo(ravdess_zip) as srv:
        url = srv.api_url
    with pytest.raises(DownloadError, match="could not reach 127.0.0.1"):
        download_ravdess(tmp_path / "d", api_url=url, progress=False)


def test_a_complete_corpus_is_not_downloaded_again(tmp_path, ravdess_zip):
    dest = tmp_path / "ravdess"
    for a in range(1, 25):
        (dest / f"Actor_{a:02d}").mkdir(parents=True)
        (dest / f"Actor_{a:02d}" / f"03-01-01-01-01-01-{a:02d}.wav").write_bytes(b"RIFF")
    with FakeZenodo(ravdess_zip) as srv:
        assert download_ravdess(dest, api_url=srv.api_url, progress=False) == dest
    assert srv.requests == []
    (dest / "Actor_24" / "03-01-01-01-01-01-24.wav").unlink()
    with FakeZenodo(ravdess_zip) as srv:
        download_ravdess(dest, api_url=srv.api_url, progress=False)
    assert len(srv.requests) == 2, "an incomplete corpus is fetched (metadata, then the archive)"


def test_record_without_the_archive(tmp_path, ravdess_zip):
    with FakeZenodo(ravdess_zip) as srv, pytest.raises(DownloadError, match=f"no file named {ARCHIVE}"):
        download_ravdess(tmp_path / "d", api_url=srv.base + "/api/records/other", progress=False)


def test_cli_download_leaves_a_loadable_corpus(tmp_path, ravdess_zip):
    dest = tmp_path / "corpus"
    with FakeZenodo(ravdess_zip) as srv:
        proc = subprocess.run([sys.executable, "-m", "ser_core", "data", "download", "ravdess", "--dest", str(dest),
                               "--api-url", srv.api_url], capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert str(dest) in proc.stdout
    assert "Traceback" not in proc.stderr
    assert_corpus(dest)


def test_cli_download_failure_is_one_line(tmp_path, ravdess_zip):
    with FakeZenodo(ravdess_zip, md5="f" * 32) as srv:
        proc = subprocess.run([sys.executable, "-m", "ser_core", "data", "download", "ravdess", "--dest",
                               str(tmp_path / "c"), "--api-url", srv.api_url], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "checksum" in lines[0]
    assert "Traceback" not in proc.stderr
