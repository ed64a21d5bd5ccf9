"""tools/torch_headers.py and tools/cxx17_check.py: headers from a wheel by range requests, the C++17 compile."""

import importlib.util
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import cxx17_check  # noqa: E402
import torch_headers  # noqa: E402

HEADERS = {"torch/include/torch/extension.h": b"#pragma once\n", "torch/include/c10/util/bit_cast.h": b"// c10\n" * 50}
# What lies around torch/include/ in a real wheel: the libraries before it, Python files after it.
OTHERS = {"torch/lib/libtorch.so": bytes(range(256)) * 4096, "torch/__init__.py": b"# torch\n" * 1000,
          "torch-2.11.0.dist-info/METADATA": b"Name: torch\n"}


def make_wheel(corrupt: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("torch/lib/libtorch.so", OTHERS["torch/lib/libtorch.so"], zipfile.ZIP_STORED)
        for name, data in HEADERS.items():  # stored when corrupted, so that the CRC (not zlib) finds it
            wheel.writestr(name, data, zipfile.ZIP_STORED if corrupt else zipfile.ZIP_DEFLATED)
        for name in ["torch/__init__.py", "torch-2.11.0.dist-info/METADATA"]:
            wheel.writestr(name, OTHERS[name], zipfile.ZIP_DEFLATED)
    data = bytearray(buffer.getvalue())
    if corrupt:  # one byte of the last header's compressed data
        info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("torch/include/c10/util/bit_cast.h")
        data[info.header_offset + 30 + len(info.filename) + 2] ^= 0xFF
    return bytes(data)


class Server:
    """Serves files by path over HTTP with range requests; counts the bytes it sends."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.sent, self.requests = files, 0, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body):
                server.requests += 1
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                status, part = 200, data
                if wanted and ranges:
                    start, stop = (int(v) for v in wanted.removeprefix("bytes=").split("-"))
                    status, part = 206, data[start:stop + 1]
                self.send_response(status)
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(part) if body or status == 206 else len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(part)
                    server.sent += len(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    index = {"files": [{"filename": name, "url": f"/wheels/{name}"} for name in [
        "torch-2.11.0-cp313-cp313t-manylinux_2_28_x86_64.whl", "torch-2.11.0-cp311-cp311-macosx_11_0_arm64.whl",
        "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl", "torch-2.10.0-cp311-cp311-manylinux_2_28_x86_64.whl"]]}
    running = Server({"/simple/torch/": json.dumps(index).encode(), "/wheel.whl": make_wheel(),
                      "/bad.whl": make_wheel(corrupt=True)})
    yield running
    running.close()


def test_find_wheel_url_picks_a_linux_x86_64_cpython_wheel_of_that_version(server):
    assert torch_headers.find_wheel_url("2.11.0", f"{server.url}/simple") == \
        "/wheels/torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with pytest.raises(FileNotFoundError, match="version: expected a torch release.*got '9.9.9'"):
        torch_headers.find_wheel_url("9.9.9", f"{server.url}/simple")


def test_fetch_headers_reads_only_the_include_members_and_caches_them(server, tmp_path):
    include = torch_headers.fetch_headers("2.11.0", wheel_url=f"{server.url}/wheel.whl", root=tmp_path)
    assert include == tmp_path / "torch-2.11.0" / "include"
    got = {str(p.relative_to(include)): p.read_bytes() for p in include.rglob("*") if p.is_file()}
    assert got == {name.removeprefix("torch/include/"): data for name, data in HEADERS.items()}
    assert server.sent < len(OTHERS["torch/lib/libtorch.so"]) / 4  # the libraries never came
    requests = server.requests
    assert torch_headers.fetch_headers("2.11.0", wheel_url=f"{server.url}/wheel.whl", root=tmp_path) == include
    assert server.requests == requests  # from the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torch-2.11.0"]


def test_a_corrupt_member_fails_and_leaves_no_cache(server, tmp_path):
    with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
        torch_headers.fetch_headers("2.11.0", wheel_url=f"{server.url}/bad.whl", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_server_without_range_requests_is_an_error(tmp_path):
    plain = Server({"/wheel.whl": make_wheel()}, ranges=False)
    try:
        with pytest.raises(OSError, match="does not take range requests"):
            torch_headers.fetch_headers("2.11.0", wheel_url=f"{plain.url}/wheel.whl", root=tmp_path)
    finally:
        plain.close()


def refuse(error):
    def urlopen(*args, **kwargs):
        raise error
    return urlopen


def test_offline_skips_with_a_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FASTNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(torch_headers.urllib.request, "urlopen",
                        refuse(urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))))
    assert cxx17_check.main([]) == 0
    assert "cxx17-check: SKIPPED (no network" in capsys.readouterr().out


def test_any_other_fetch_failure_fails_loudly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FASTNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(torch_headers.urllib.request, "urlopen", refuse(
        urllib.error.HTTPError("https://pypi.org/simple/torch/", 503, "Service Unavailable", {}, None)))
    assert cxx17_check.main([]) == 2
    assert "cannot fetch torch 2.11.0's headers: HTTP Error 503" in capsys.readouterr().err


def test_include_argument_must_be_a_torch_include_folder(tmp_path, capsys):
    assert cxx17_check.main(["--include", str(tmp_path)]) == 2
    assert "--include: expected a torch include/ folder" in capsys.readouterr().err


def test_the_check_covers_every_csrc_translation_unit():
    setup_py = cxx17_check.load_setup_py()
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.suffix in (".cpp", ".cu"))
    assert sorted(setup_py.cpp_sources() + setup_py.cuda_sources()) == on_disk


CXX20_ONLY = ("#include <bit>\n#include <cstdint>\n"
              "std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }\n")


def test_host_command_rejects_a_cxx20_library_feature(tmp_path):
    source = tmp_path / "probe.cpp"
    source.write_text(CXX20_ONLY)
    command = cxx17_check.host_command(shutil.which("c++") or "g++", str(source), [], [])
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode != 0 and "bit_cast" in done.stderr
    source.write_text(CXX20_ONLY.replace("std::bit_cast<std::uint32_t>(x)", "static_cast<std::uint32_t>(x)"))
    assert subprocess.run(command, capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_cuda_commands_reject_a_cxx20_library_feature_in_a_cu_file(tmp_path):
    source = tmp_path / "probe.cu"
    source.write_text(CXX20_ONLY + "__global__ void kernel(float* x) { x[threadIdx.x] = 1.0f; }\n")
    ok, output = cxx17_check.run_all(cxx17_check.cuda_commands("nvcc", shutil.which("c++") or "g++", str(source),
                                                                [], [], tmp_path))
    assert not ok and "bit_cast" in output
