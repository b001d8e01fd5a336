"""``edgespec doctor``: renders :func:`edgespec.diagnosis.diagnose` as text or one JSON object."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported when the command runs: these load llama.cpp
    from edgespec.diagnosis import Diagnosis, ExactCheck, Loaded
    from edgespec.forecast import Forecast


def forecast_line(f: Forecast, no_draft_because: str = "no draft model given") -> str:
    """One line: whether a draft model can pay here, and how far lookup can go on copy-heavy text."""
    lookup = (
        f"lookup can reach up to {f.lookup.speedup:.1f} x on copy-heavy text"
        if f.lookup.pays
        else "lookup cannot pay either (verifying n tokens costs n steps)"
    )
    typical, perfect = f.draft_typical, f.draft_perfect
    if typical is None or perfect is None:
        return f"{no_draft_because}; {lookup}"
    if not perfect.pays:
        return f"a draft model cannot pay on this device; {lookup}"
    if not typical.pays:
        return (
            f"a draft model pays only at very high acceptance (at most {perfect.speedup:.1f} x if every "
            f"guess is kept); {lookup}"
        )
    return (
        f"a draft model can reach about {typical.speedup:.1f} x at {f.acceptance:.0%} acceptance "
        f"({typical.k} tokens a step; at most {perfect.speedup:.1f} x); {lookup}"
    )


def rewind_line(loaded: Loaded) -> str:
    """How the target's cache is cut back after a rejected guess, and what that costs."""
    costs, step_s = loaded.costs, loaded.costs.verify(1)
    restore = f"{costs.restore_s * 1000:.3g} ms ({costs.restore_s / step_s:.3f} of a step)"
    if loaded.rewind == "cache":
        return f"{loaded.architecture}: a KV cache, cut back anywhere for free"
    if loaded.rewind == "rollback":
        line = (
            f"{loaded.architecture}: recurrent state rolled back by llama.cpp, up to {costs.native_depth} "
            f"tokens for free (its snapshots are in the curve); deeper, a saved state is restored: {restore}"
        )
    else:
        line = (
            f"{loaded.architecture}: recurrent state saved before each verification with guesses "
            f"(in the curve) and restored after a rejection: {restore}; the kept guesses are read again"
        )
    if costs.draft_rewind_s:
        line += f"; the draft saves and restores its own: {costs.draft_rewind_s * 1000:.3g} ms a step"
    return line


def mtp_line(loaded: Loaded) -> str:
    """Whether the target has MTP layers, what an MTP step and its catching up cost, and what they
    can reach at the forecast's acceptance."""
    if not loaded.mtp_layers and not loaded.assistant:
        return "none in this target (it cannot draft for itself)"
    if loaded.mtp_unusable is not None:
        return f"{loaded.mtp_layers}, unused: {loaded.mtp_unusable}"
    cost, step_s, f = loaded.costs.drafting("mtp"), loaded.costs.verify(1), loaded.forecast
    who = "none, but the draft is Gemma 4's assistant" if loaded.assistant else str(loaded.mtp_layers)
    if cost is None or f.mtp_typical is None:
        return f"{who} (not measured)"
    reach = (
        f"can reach about {f.mtp_typical.speedup:.1f} x at {f.acceptance:.0%} acceptance"
        if f.mtp_typical.pays
        else f"cannot pay here even at {f.acceptance:.0%} acceptance"
    )
    catch_up = (
        "it catches up on nothing (it reads the target's cache)"
        if loaded.assistant
        else f"catching up 8 tokens {cost.batch_s(8) * 1000:.2f} ms"
    )
    return (
        f"{who}: an MTP step {cost.step_s * 1000:.2f} ms ({cost.step_s / step_s:.2f} of a "
        f"target step), {catch_up}; {'it' if loaded.assistant else 'they'} {reach} (--strategy mtp, or auto)"
    )


def _no_draft_because(d: Diagnosis) -> str:
    has_draft = d.models is not None and d.models.draft is not None
    if has_draft and d.loaded is not None and d.loaded.assistant and d.loaded.incompatibility is None:
        return "no draft model (the assistant drafts as mtp, above)"
    return "the draft cannot be used with this target" if has_draft else "no draft model given"


def as_json(d: Diagnosis) -> dict[str, Any]:
    """The diagnosis as ``doctor --json`` prints it: one flat object (README: "edgespec doctor")."""
    out: dict[str, Any] = dataclasses.asdict(d.device)
    if d.problem is not None:
        out["problem"] = d.problem
    if d.models is not None:
        m = d.models
        draft = str(m.draft) if m.draft is not None else None
        out.update(target=str(m.target), draft=draft, model_bytes=m.model_bytes, fits=m.fits)
    if d.loaded is not None:
        loaded, costs, typical = d.loaded, d.loaded.costs, d.loaded.forecast.draft_typical
        mtp, mtp_typical = costs.drafting("mtp"), loaded.forecast.mtp_typical
        has_draft = d.models is not None and d.models.draft is not None
        out.update(
            compatible=loaded.incompatibility is None if has_draft else None,
            incompatibility=loaded.incompatibility,
            weight_buffers_mib=loaded.weight_buffers_mib,
            offloaded_layers=loaded.offloaded_layers,
            step_s=costs.verify(1),
            draft_s=costs.draft_s,
            verify_units={str(n): u for n, u in costs.relative().items()},
            architecture=loaded.architecture,
            rewind=loaded.rewind,
            rollback_depth=costs.native_depth,
            restore_s=costs.restore_s,
            draft_rewind_s=costs.draft_rewind_s,
            mtp_layers=loaded.mtp_layers,
            mtp_unusable=loaded.mtp_unusable,
            assistant=loaded.assistant,
            mtp_s=mtp.step_s if mtp is not None else None,
            mtp_speedup=round(mtp_typical.speedup, 2) if mtp_typical is not None else None,
            lookup_ceiling=round(loaded.forecast.lookup.speedup, 2),
            draft_speedup=round(typical.speedup, 2) if typical is not None else None,
            forecast=forecast_line(loaded.forecast, _no_draft_because(d)),
        )
    if d.exact is not None:
        out["exact"] = {k: v for k, v in dataclasses.asdict(d.exact).items() if v is not None}
    return out


def _gb(n: int | None) -> str:
    return f"{n / 1e9:.2f} GB" if n is not None else "unknown"


def _print(d: Diagnosis) -> None:
    dev = d.device
    click.echo(f"edgespec {dev.edgespec}, llama-cpp-python {dev.llama_cpp_python}, Python {dev.python}")
    click.echo(f"platform: {dev.platform}")
    click.echo(f"llama.cpp: {dev.system_info}")
    if dev.gpu_offload:
        backends = ", ".join(dev.gpu_backends) or "a GPU backend"
        layers = dev.n_gpu_layers
        use = (
            "all layers"
            if layers < 0
            else f"{layers} layers"
            if layers
            else "no layers (pass --n-gpu-layers -1)"
        )
        click.echo(f"GPU offload: compiled in ({backends}); offloading {use}")
    else:
        click.echo(
            "GPU offload: not compiled in: CPU only (for Metal or CUDA reinstall llama-cpp-python with "
            'CMAKE_ARGS="-DGGML_METAL=on" or "-DGGML_CUDA=on")'
        )
    click.echo(f"threads: {dev.threads} of {dev.threads_available} available")
    mem = f"memory: {_gb(dev.memory_available)} available of {_gb(dev.memory_total)}"
    if d.models is not None:
        mem += f"; the models take {_gb(d.models.model_bytes)} plus the context"
        if d.models.fits is False:
            mem += " - NOT ENOUGH: expect swapping, or offload to a GPU"
    click.echo(mem)
    if d.models is not None:
        click.echo(f"target: {d.models.target}")
        click.echo(f"draft:  {d.models.draft or '(none: lookup and the target alone)'}")
    if d.loaded is not None and d.models is not None and d.models.draft is not None:
        why = d.loaded.incompatibility
        fits = (
            "yes, Gemma 4's assistant for this target (it drafts as mtp)"
            if d.loaded.assistant
            else "yes, same tokenizer"
        )
        click.echo(f"draft compatible: {fits if why is None else f'NO: {why}'}")
    if d.problem is not None:
        click.echo(f"problem: {d.problem}")
    if d.loaded is None:
        return
    loaded, costs = d.loaded, d.loaded.costs
    buffers = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in loaded.weight_buffers_mib.items())
    on_gpu = [b for b in loaded.weight_buffers_mib if not b.upper().startswith("CPU")]
    where = f"on the GPU ({', '.join(on_gpu)})" if on_gpu else "on the CPU"
    offloaded = f"; llama.cpp offloaded {loaded.offloaded_layers} layers" if loaded.offloaded_layers else ""
    click.echo(f"weights: {where}: {buffers or 'unknown'}{offloaded}")
    step_s = costs.verify(1)
    line = f"costs: one target step {step_s * 1000:.1f} ms"
    if costs.draft_s is not None:
        ratio = costs.draft_s / step_s
        line += f"; draft {costs.draft_s * 1000:.1f} ms a token ({ratio:.2f} of a target step)"
    click.echo(line)
    curve = "  ".join(f"{n}: {u:g}" for n, u in costs.relative().items())
    click.echo(f"verifying n tokens costs (in single steps): {curve}")
    click.echo(f"rewind: {rewind_line(loaded)}")
    click.echo(f"MTP layers: {mtp_line(loaded)}")
    click.echo(f"forecast: {forecast_line(loaded.forecast, _no_draft_because(d))}")
    if d.exact is not None:
        click.echo(f"exact mode (--exact): {_exact_line(d.exact)}")


def _exact_line(e: ExactCheck) -> str:
    if not e.holds or e.batch_cap is None or e.step_s is None or e.cost is None:
        return f"does NOT hold here: {e.problem}"
    cost = f"one target step {e.step_s * 1000:.1f} ms ({e.cost:+.0%} against the default mode)"
    if e.batch_cap < 2:
        return f"output bit-identical, but no batch decodes like single steps here: no speculation; {cost}"
    return (
        f"holds; verification batches of up to {e.batch_cap} tokens decode bit-identically to "
        f"single steps (checked up to {e.checked_up_to}); {cost}"
    )


@click.command()
@click.option("--target", metavar="SPEC", help="Target model [default: the default pair's].")
@click.option("--draft", metavar="SPEC", help="Draft model.")
@click.option("--pair", metavar="NAME", help="A curated pair by name.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: all].")
@click.option(
    "--n-gpu-layers", type=int, default=0, show_default=True, help="Layers to offload to the GPU (-1: all)."
)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object.")
def doctor(
    target: str | None,
    draft: str | None,
    pair: str | None,
    threads: int | None,
    n_gpu_layers: int,
    json_out: bool,
) -> None:
    """Check llama.cpp's build, GPU offload, threads and memory, the pair's compatibility, and what
    speculation can gain on this device (measured once, then cached). Downloads nothing."""
    from edgespec.diagnosis import diagnose

    logging.getLogger("edgespec.measure").setLevel(logging.INFO)
    d = diagnose(target, draft, pair, threads, n_gpu_layers)
    if json_out:
        click.echo(json.dumps(as_json(d), indent=2))
    else:
        _print(d)
    if d.problem is not None and d.models is not None:
        sys.exit(1)  # the models are there but could not be loaded or measured
