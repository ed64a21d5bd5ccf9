"""torch's C++ headers (the wheel's torch/include/) of one release, fetched without downloading the wheel.

A wheel is a zip file whose central directory, at its end, lists every member with its offset. Over HTTP
range requests the directory and then the one run of bytes that holds torch/include/ are read: for torch
2.11.0's x86-64 Linux wheel about 1 MB and 10 MB of its 530 MB. zipfile checks every member's CRC-32.
The headers are cached under $FASTNAS_CACHE (default ~/.cache/fastnas)/torch-<version>/include.

Offline (the index's host cannot be resolved, or the network is unreachable) is told apart from every
other failure, which raises: NoNetwork lets a caller skip with a clear line, never silently.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

PYPI_SIMPLE = "https://pypi.org/simple"
INCLUDE_PREFIX = "torch/include/"
TIMEOUT_S = 60
_OFFLINE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class NoNetwork(OSError):
    """The package index cannot be reached at all: no name resolution or no route."""


def cache_root() -> Path:
    return Path(os.environ.get("FASTNAS_CACHE") or Path.home() / ".cache" / "fastnas")


def _is_offline(error: BaseException) -> bool:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return isinstance(reason, socket.gaierror) or (isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS)


def _open(request: urllib.request.Request | str):
    """urlopen, with NoNetwork for an unreachable network (HTTP errors and time-outs stay what they are)."""
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as error:
        if _is_offline(error):
            raise NoNetwork(f"cannot reach {getattr(request, 'full_url', request)}: {error}") from error
        raise


class HTTPRangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests; `prefetch` holds one byte range in memory.

    `fetched` counts the bytes received, so a caller (or a test) can see that only part of the file came.
    """

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.position = 0
        self.fetched = 0
        self._cache_start, self._cache = 0, b""
        with _open(urllib.request.Request(url, method="HEAD")) as response:
            if response.headers.get("Accept-Ranges") != "bytes":
                raise OSError(f"{url}: the server does not take range requests (Accept-Ranges: "
                              f"{response.headers.get('Accept-Ranges')!r})")
            self.size = int(response.headers["Content-Length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def _get(self, start: int, stop: int) -> bytes:
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{stop - 1}"})
        with _open(request) as response:
            if response.status != 206:
                raise OSError(f"{self.url}: expected a partial answer (206) to a range request, got {response.status}")
            data = response.read()
        if len(data) != stop - start:
            raise OSError(f"{self.url}: asked for {stop - start} bytes at {start}, got {len(data)}")
        self.fetched += len(data)
        return data

    def prefetch(self, start: int, stop: int) -> None:
        """Fetches bytes [start, stop) in one request; later reads inside that range are served from memory."""
        self._cache_start, self._cache = start, self._get(start, stop)

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.position)
        if n <= 0:
            return 0
        offset = self.position - self._cache_start
        if 0 <= offset and offset + n <= len(self._cache):
            data = self._cache[offset:offset + n]
        else:
            data = self._get(self.position, self.position + n)
        buffer[:n] = data
        self.position += n
        return n


def find_wheel_url(version: str, index_url: str = PYPI_SIMPLE) -> str:
    """URL of a CPython x86-64 Linux wheel of torch `version` on a PEP 691 (JSON) simple index."""
    request = urllib.request.Request(f"{index_url.rstrip('/')}/torch/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with _open(request) as response:
        files = json.load(response)["files"]
    # Any Python version will do: the headers do not depend on it. Not the free-threaded (cp313t) builds.
    pattern = re.compile(rf"torch-{re.escape(version)}-cp3\d+-cp3\d+-manylinux[\w.]*_x86_64\.whl")
    wheels = sorted((f["filename"], f["url"]) for f in files if pattern.fullmatch(f["filename"]))
    if not wheels:
        raise FileNotFoundError(f"version: expected a torch release with an x86-64 Linux wheel on {index_url}, "
                                f"got {version!r}")
    return wheels[0][1]


def _member_path(name: str) -> Path:
    relative = Path(name[len(INCLUDE_PREFIX):])
    if relative.is_absolute() or ".." in relative.parts:
        raise OSError(f"unsafe member name in the wheel: {name!r}")
    return relative


def extract_headers(wheel: HTTPRangeFile, destination: Path) -> int:
    """Writes every torch/include/ member of the wheel under destination; returns how many."""
    archive = zipfile.ZipFile(io.BufferedReader(wheel, buffer_size=1 << 16))
    members = sorted(archive.infolist(), key=lambda info: info.header_offset)
    wanted = [i for i, info in enumerate(members) if info.filename.startswith(INCLUDE_PREFIX) and not info.is_dir()]
    if not wanted:
        raise OSError(f"{wheel.url}: no {INCLUDE_PREFIX} in this wheel")
    # The wanted members lie together in the wheel: fetch from the first one's header up to the next member.
    stop = members[wanted[-1] + 1].header_offset if wanted[-1] + 1 < len(members) else archive.start_dir
    wheel.prefetch(members[wanted[0]].header_offset, stop)
    for i in wanted:
        target = destination / _member_path(members[i].filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(members[i]))  # raises BadZipFile on a CRC mismatch
    return len(wanted)


def fetch_headers(version: str, index_url: str = PYPI_SIMPLE, wheel_url: str | None = None,
                  root: Path | None = None) -> Path:
    """The include/ folder of torch `version`, from the cache or else fetched into it.

    The folder is written beside its final place and renamed into it, so a killed fetch leaves no half tree.
    Raises NoNetwork when offline, OSError (or zipfile.BadZipFile) for any other failure.
    """
    folder = (root or cache_root()) / f"torch-{version}"
    include = folder / "include"
    if include.is_dir():
        return include
    wheel = HTTPRangeFile(wheel_url or find_wheel_url(version, index_url))
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        count = extract_headers(wheel, partial / "include")
        (partial / "SOURCE").write_text(f"{wheel.url}\n{count} headers, {wheel.fetched} of {wheel.size} bytes "
                                        "fetched\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            partial.rename(folder)
        except OSError:
            if not include.is_dir():  # not a concurrent fetch that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return include


if __name__ == "__main__":
    print(fetch_headers(sys.argv[1] if len(sys.argv) > 1 else "2.11.0"))
