"""The curated registry: the shipped pairs, their pins, and user additions via EDGESPEC_PAIRS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgespec.errors import EdgespecError
from edgespec.registry import default_pair, find_pair, get_pair, pairs

# The default pair's pinned sizes and sha256, as assembled from its PyPI packages.
PINNED = {
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf": (
        1117320768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf": (
        491400064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


@pytest.fixture(autouse=True)
def no_user_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGESPEC_PAIRS", raising=False)


def test_default_pair_is_pinned_and_mirrored() -> None:
    pair = default_pair()
    assert pair.name == "qwen2.5-coder-1.5b"
    for ref in (pair.target, pair.draft):
        assert (ref.size, ref.sha256) == PINNED[ref.file]
        assert ref.mirror is not None
        assert (ref.mirror.size, ref.mirror.sha256) == PINNED[ref.file]
    assert pair.target.mirror is not None and len(pair.target.mirror.packages) == 22
    assert pair.draft.mirror is not None and len(pair.draft.mirror.packages) == 6


def test_the_laptop_pairs_are_there() -> None:
    expected = {
        "qwen2.5-coder-7b": ("Qwen2.5-Coder-7B", "qwen2.5-coder-0.5b"),
        "qwen2.5-coder-14b": ("Qwen2.5-Coder-14B", "qwen2.5-coder-0.5b"),
        "llama-3.1-8b": ("Llama-3.1-8B", "Llama-3.2-1B"),
        "qwen3-8b": ("Qwen3-8B", "Qwen3-0.6B"),
        "gemma-3-12b": ("gemma-3-12b", "gemma-3-1b"),
        "gemma-3-27b": ("gemma-3-27b", "gemma-3-1b"),
    }
    all_pairs = pairs()
    for name, (target, draft) in expected.items():
        pair = all_pairs[name]
        assert target.lower() in pair.target.file.lower()
        assert draft.lower() in pair.draft.file.lower()


def test_the_hybrid_pairs_are_there() -> None:
    # (target family in the file name, draft family in the file name, both repos' publisher)
    expected = {
        "qwen3.5-9b": ("Qwen3.5-9B", "Qwen3.5-0.8B", "unsloth"),
        "qwen3.6-27b": ("Qwen3.6-27B", "Qwen3.5-0.8B", "unsloth"),
        "lfm2-2.6b": ("LFM2-2.6B", "LFM2-350M", "LiquidAI"),
        "granite-4.0-h-small": ("granite-4.0-h-small", "granite-4.0-h-350m", "ibm-granite"),
    }
    all_pairs = pairs()
    for name, (target, draft, publisher) in expected.items():
        pair = all_pairs[name]
        assert target.lower() in pair.target.file.lower()
        assert draft.lower() in pair.draft.file.lower()
        assert re.search(r"q4_k_m", pair.target.file + pair.draft.file, re.IGNORECASE)
        for ref in (pair.target, pair.draft):
            assert ref.repo.split("/")[0] == publisher
            # Nothing checked them here: no pins, so a pull trusts the Hub's own transfer checks.
            assert ref.size is None and ref.sha256 is None and ref.mirror is None
    # One Qwen3.5 draft file serves both Qwen targets.
    assert all_pairs["qwen3.5-9b"].draft == all_pairs["qwen3.6-27b"].draft


def test_the_mtp_targets_are_there() -> None:
    """Targets that draft with their own MTP layers, from Unsloth's -MTP-GGUF repos; one with a draft
    model too, so that auto weighs both."""
    expected = {
        "qwen3.5-4b-mtp": ("Qwen3.5-4B-MTP-GGUF", None),
        "qwen3.5-9b-mtp": ("Qwen3.5-9B-MTP-GGUF", None),
        "qwen3.6-27b-mtp": ("Qwen3.6-27B-MTP-GGUF", "Qwen3.5-0.8B"),
        "qwen3.6-35b-a3b-mtp": ("Qwen3.6-35B-A3B-MTP-GGUF", None),
    }
    all_pairs = pairs()
    for name, (repo, draft) in expected.items():
        pair = all_pairs[name]
        assert pair.target.repo == f"unsloth/{repo}" and "own MTP layer" in pair.description
        assert re.search(r"q4_k_m", pair.target.file, re.IGNORECASE)
        assert pair.target.size is None and pair.target.sha256 is None  # nothing checked them here
        if draft is None:
            assert pair.draft is None and pair.model("draft") is None and "no draft model" in pair.description
        else:
            assert pair.draft == all_pairs["qwen3.6-27b"].draft and draft in pair.draft.file


def test_every_entry_is_well_formed() -> None:
    for pair in pairs().values():
        assert pair.description and pair.license
        for ref in (pair.target, *([pair.draft] if pair.draft else [])):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+-GGUF", ref.repo), ref.repo
            assert ref.file.endswith(".gguf") and re.search(r"q4_k_m|q8_0", ref.file, re.IGNORECASE)
            assert ref.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", ref.sha256)
            assert str(ref) == f"{ref.repo}/{ref.file}"
        assert pair.model("target") is pair.target and pair.model("draft") is pair.draft


def test_lookups() -> None:
    assert find_pair("nope") is None
    assert get_pair("qwen3-8b").name == "qwen3-8b"
    with pytest.raises(EdgespecError, match=r"unknown pair 'nope'; known pairs: gemma-3-12b, "):
        get_pair("nope")


def test_user_pairs_add_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "mine.toml"
    extra.write_text(
        'default = "mine"\n[pairs.mine]\ndescription = "my pair"\nlicense = "MIT"\n'
        '[pairs.mine.target]\nrepo = "me/t-GGUF"\nfile = "t-Q4_K_M.gguf"\n'
        '[pairs.mine.draft]\nrepo = "me/d-GGUF"\nfile = "d-Q4_K_M.gguf"\nsize = 3\n'
    )
    monkeypatch.setenv("EDGESPEC_PAIRS", str(extra))
    assert default_pair().name == "mine"
    draft = get_pair("mine").draft
    assert draft is not None and draft.size == 3
    assert "qwen2.5-coder-1.5b" in pairs()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pairs.x", "is not valid TOML"),
        (
            '[pairs.x]\ndescription = "d"\n[pairs.x.draft]\nrepo = "a/b"\nfile = "f.gguf"\n',
            "every pair needs a target",
        ),
        (
            '[pairs.x.target]\nrepo = "a/b"\n[pairs.x.draft]\nrepo = "a/b"\nfile = "f"\n',
            "needs 'repo' and 'file'",
        ),
        ('default = "zzz"\n', "the default pair 'zzz' is not in the registry"),
    ],
)
def test_bad_user_registry_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    monkeypatch.setenv("EDGESPEC_PAIRS", str(bad))
    with pytest.raises(EdgespecError, match=re.escape(message)):
        pairs()


def test_missing_user_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESPEC_PAIRS", str(tmp_path / "absent.toml"))
    with pytest.raises(EdgespecError, match="cannot read EDGESPEC_PAIRS="):
        default_pair()
