"""``ser data download ravdess``: fetch the RAVDESS speech archive from Zenodo.

Reads the record's metadata (file name, size, md5), downloads the archive
with a progress bar into ``<zip>.part`` (resumed with an HTTP Range request
after an interruption), verifies the md5, and unpacks it safely (no absolute
paths, no ``..``, no links) so the ``Actor_XX`` folders end up in ``dest``.
Standard library only; every failure is a one-line :class:`DownloadError`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from .errors import DownloadError
from .progress import Progress

RECORD_API = "https://zenodo.org/api/records/1188976"
ARCHIVE = "Audio_Speech_Actors_01-24.zip"
TIMEOUT = 60.0
CHUNK = 1 << 20
USER_AGENT = "ser-workbench/0.1 (python urllib)"


def _host(url: str) -> str:
    return urlparse(url).netloc or url


def _open(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc
        raise DownloadError(f"{_host(url)} answered HTTP {exc.code} ({exc.reason}) for {url}") from None
    except (urllib.error.URLError, socket.timeout, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not reach {_host(url)} ({reason}); check the network and try again") from None


def record_file(api_url: str = RECORD_API, key: str = ARCHIVE) -> dict:
    """``{"key", "size", "md5", "url"}`` of one file of a Zenodo record, from its JSON metadata."""
    with _open(api_url) as resp:
        try:
            meta = json.loads(resp.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"the record metadata at {api_url} is not valid JSON ({exc})") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if isinstance(files, dict):          # InvenioRDM layout: {"entries": {key: {...}} or [...]}
        files = files.get("entries", files)
        files = list(files.values()) if isinstance(files, dict) else files
    for f in files or []:
        if not isinstance(f, dict) or (f.get("key") or f.get("filename")) != key:
            continue
        links = f.get("links") or {}
        url = links.get("content") or links.get("download") or links.get("self")
        checksum = str(f.get("checksum", ""))
        algo, _, digest = checksum.partition(":")
        if not url or algo.lower() != "md5" or not digest:
            raise DownloadError(f"the record lists {key} without a download link or md5 checksum")
        return {"key": key, "size": int(f.get("size") or f.get("filesize") or 0), "md5": digest.lower(),
                "url": url}
    raise DownloadError(f"the record at {api_url} has no file named {key}")


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, part: Path, size: int, *, progress: bool = True) -> Path:
    """Download ``url`` into ``part``, continuing from its current length with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    if size and have > size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    resp = _open(url, headers)
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        if status == 416:                          # nothing left to send: the part is already whole
            return part
        if have and status != 206:                 # the server ignored the range: start again
            have = 0
        total = size or (have + int(resp.headers.get("Content-Length") or 0))
        bar = Progress(max(total // CHUNK, 1), f"{part.name.removesuffix('.part')} (MiB)",
                       enabled=None if progress else False)
        bar.update(have // CHUNK)
        got = have
        try:
            with open(part, "ab" if have else "wb") as out:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    got += len(block)
                    bar.update(got // CHUNK - bar.done)
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            raise DownloadError(f"the download from {_host(url)} broke off after {got // CHUNK} MiB ({exc}); "
                                "run the command again to resume") from None
        finally:
            bar.close()
    if size and got != size:
        raise DownloadError(f"the download from {_host(url)} stopped at {got} of {size} bytes; "
                            "run the command again to resume")
    return part


def _safe_members(zf: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    members = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        p = PurePosixPath(name)
        mode = info.external_attr >> 16
        if (p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":"))
                or (mode and (mode & 0o170000) == 0o120000)):
            raise DownloadError(f"{archive.name} holds an unsafe entry ({info.filename!r}); refusing to unpack it")
        members.append(info)
    return members


def unpack(archive: Path, dest: Path) -> list[Path]:
    """Unpack into a scratch folder inside ``dest``, then move every ``Actor_XX`` folder into place."""
    dest.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in _safe_members(zf, archive):
                    zf.extract(info, scratch)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
            raise DownloadError(f"{archive.name} is not a valid zip archive ({exc})") from None
        actors = sorted(p for p in scratch.rglob("Actor_*") if p.is_dir())
        if not actors:
            raise DownloadError(f"{archive.name} holds no Actor_XX folders; is it the RAVDESS speech archive?")
        placed = []
        for src in actors:
            target = dest / src.name
            if target.exists():
                shutil.rmtree(target)
            os.replace(src, target)
            placed.append(target)
        return placed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def is_complete(dest: Path) -> bool:
    """True when ``dest`` already holds every actor's folder with clips in it."""
    return all(any((dest / f"Actor_{a:02d}").glob("*.wav")) for a in range(1, 25))


def download_ravdess(dest: Path | str, api_url: str | None = None, progress: bool = True) -> Path:
    """Download, verify and unpack RAVDESS speech into ``dest``; returns ``dest`` (holding Actor_01..24).

    A ``dest`` that already holds all 24 actors is left as it is (no network access).
    """
    dest = Path(dest).expanduser()
    if is_complete(dest):
        return dest
    info = record_file(api_url or RECORD_API)
    dest.mkdir(parents=True, exist_ok=True)
    need = 2 * info["size"]
    if info["size"] and shutil.disk_usage(dest).free < need:
        raise DownloadError(f"not enough free space in {dest}: about {need / 1e9:.1f} GB is needed")
    archive = dest / info["key"]
    part = archive.with_name(archive.name + ".part")
    if not (archive.exists() and md5sum(archive) == info["md5"]):
        fetch(info["url"], part, info["size"], progress=progress)
        got = md5sum(part)
        if got != info["md5"]:
            part.unlink()
            raise DownloadError(f"{info['key']} failed its checksum (md5 {got}, expected {info['md5']}); "
                                "the damaged download was removed, run the command again")
        os.replace(part, archive)
    unpack(archive, dest)
    archive.unlink()
    return dest
