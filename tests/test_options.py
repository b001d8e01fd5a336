"""GenerationOptions: one object owns each option's name, default and allowed values."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgespec import GenerationOptions, Pair
from edgespec.cli.options import sampling_options
from edgespec.errors import InvalidParameterError
from edgespec.options import DRAFT_LIMIT, FLAGS, RULES


def test_defaults_are_llama_cpps_and_512_tokens() -> None:
    o = GenerationOptions()
    assert (o.temperature, o.top_k, o.top_p, o.min_p, o.seed) == (0.8, 40, 0.95, 0.05, None)
    assert (o.strategy, o.max_tokens, o.stop, o.max_draft) == ("auto", 512, (), None)


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"temperature": float("nan")}, "temperature must be"),
        ({"top_k": 1.5}, "top_k must be an integer >= 0"),
        ({"top_p": 0.0}, "top_p must be a number in (0, 1]"),
        ({"min_p": 2.0}, "min_p must be a number in [0, 1]"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": True}, "max_tokens must be an integer"),
        ({"strategy": "fast"}, "strategy must be one of auto, draft, mtp, lookup, none"),
        ({"max_draft": DRAFT_LIMIT + 1}, f"max_draft must be an integer in [1, {DRAFT_LIMIT}]"),
        ({"stop": (1,)}, "stop must be strings"),
        ({"temp": 0.5}, "unknown option 'temp'; options: temperature, top_k"),
    ],
)
def test_bad_values_and_names_are_refused_saying_what_is_allowed(
    changes: dict[str, object], said: str
) -> None:
    with pytest.raises(InvalidParameterError) as info:
        GenerationOptions().replace(**changes)
    assert said in str(info.value)


def test_values_are_normalised() -> None:
    o = GenerationOptions(temperature=0, stop=["a", "b"])  # type: ignore[arg-type]
    assert o.temperature == 0.0 and isinstance(o.temperature, float) and o.stop == ("a", "b")
    assert GenerationOptions(stop="\n\n").stop == ("\n\n",)  # type: ignore[arg-type]
    assert hash(o) == hash(GenerationOptions(temperature=0.0, stop=("a", "b")))


def test_cli_flags_are_derived_from_the_rules() -> None:
    @click.command()
    @sampling_options
    def command(**values: object) -> None:
        pass

    params = {p.name: p for p in command.params if isinstance(p, click.Option)}
    assert list(params) == list(FLAGS)
    defaults = GenerationOptions()
    for flag, name in FLAGS.items():
        assert params[flag].default == getattr(defaults, name)
        assert params[flag].help == RULES[name].help
    runner = CliRunner()
    assert runner.invoke(command, ["--top-p", "0"]).exit_code == 2  # (0, 1] as the rule says
    assert runner.invoke(command, ["--top-p", "1", "--top-k", "0", "--temp", "0"]).exit_code == 0
    assert runner.invoke(command, ["--strategy", "fast"]).exit_code == 2


def test_pair_takes_options_and_keyword_overrides_and_closes_on_leaving(tiny: dict[str, Path]) -> None:
    with Pair(tiny["target"], tiny["draft-same"], n_ctx=256, n_threads=1) as pair:
        opts = GenerationOptions(temperature=0, max_tokens=5, strategy="draft")
        whole = pair.generate("a b c", opts)
        assert len(whole.token_ids) <= 5 and whole.strategy == "draft"
        shorter = pair.generate("a b c", opts, max_tokens=2, strategy="none")
        assert shorter.token_ids == whole.token_ids[:2] and shorter.strategy == "none"
        assert (
            pair.generate("a b c", max_tokens=2, temperature=0, strategy="none").token_ids
            == shorter.token_ids
        )
        with pytest.raises(InvalidParameterError, match="unknown option 'temp'"):
            pair.generate("a b c", temp=0)
    # Freed: llama.cpp's handles are released (using them now would be a use after free).
    assert pair.target._ptr is None and pair.target_ctx._ptr is None and pair.draft is not None
    assert pair.draft._ptr is None
