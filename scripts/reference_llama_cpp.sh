#!/usr/bin/env bash
# Native llama.cpp reference figures for a target/draft pair (build the tools first with
# scripts/build_llama_tools.sh).
#
#   scripts/reference_llama_cpp.sh TARGET.gguf DRAFT.gguf PROMPT_FILE
#
# PROMPT_FILE holds the user message; it is wrapped in the ChatML template Qwen uses
# (RAW_PROMPT=1 passes it verbatim). Env: LLAMA_TOOLS_DIR, THREADS (2), N_PREDICT (128),
# DRAFT_MAX (3), REPS (3). Prints key=value lines on stdout; logs of the runs go to stderr.
#
# spec_simple_tps is llama-speculative-simple's "decoded ... speed": generated tokens divided by the
# wall time of the generation loop only (prompt evaluation excluded; the last prompt token, which is
# evaluated together with the first draft, is included). Greedy; draft p_min 0, n_min 0.
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 TARGET.gguf DRAFT.gguf PROMPT_FILE" >&2; exit 2; }
TARGET="$1" DRAFT="$2" PROMPT_FILE="$3"
TOOLS="${LLAMA_TOOLS_DIR:-$HOME/.cache/edgespec/llama-tools}"
THREADS="${THREADS:-2}" N_PREDICT="${N_PREDICT:-128}" DRAFT_MAX="${DRAFT_MAX:-3}" REPS="${REPS:-3}"
for f in "$TARGET" "$DRAFT" "$PROMPT_FILE" "$TOOLS/llama-bench" "$TOOLS/llama-speculative-simple"; do
    [[ -e "$f" ]] || { echo "missing: $f (run scripts/build_llama_tools.sh?)" >&2; exit 1; }
done

bench_tg() {  # tokens/s of 64-token generation, mean over REPS runs
    "$TOOLS/llama-bench" -m "$1" -t "$THREADS" -p 0 -n 64 -r "$REPS" -o jsonl \
        | sed -n 's/.*"avg_ts": *\([0-9.eE+-]*\).*/\1/p' | head -n1
}
echo "llama_bench_tg_tps=$(bench_tg "$TARGET")"
echo "llama_bench_draft_tg_tps=$(bench_tg "$DRAFT")"

if [[ "${RAW_PROMPT:-0}" == 1 ]]; then
    PROMPT="$(cat "$PROMPT_FILE")"
else
    PROMPT="<|im_start|>user
$(cat "$PROMPT_FILE")<|im_end|>
<|im_start|>assistant
"
fi

LOG="$(mktemp)"; trap 'rm -f "$LOG"' EXIT
"$TOOLS/llama-speculative-simple" -m "$TARGET" -md "$DRAFT" --spec-type draft-simple \
    -t "$THREADS" -td "$THREADS" -c 4096 -n "$N_PREDICT" --temp 0 --top-k 1 --seed 42 --no-escape \
    --spec-draft-n-max "$DRAFT_MAX" --spec-draft-n-min 0 --spec-draft-p-min 0 \
    -p "$PROMPT" >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; exit 1; }
cat "$LOG" >&2

field() { sed -n "s/^.*\b$1 *= *\([0-9.]*\).*$/\1/p" "$LOG" | tail -n1; }
echo "spec_simple_tps=$(sed -n 's/.*decoded .* speed: *\([0-9.]*\) t\/s.*/\1/p' "$LOG" | tail -n1)"
echo "spec_simple_n_predict=$(field n_predict)"
echo "spec_simple_n_drafted=$(field n_drafted)"
echo "spec_simple_n_accept=$(field n_accept)"
echo "spec_simple_accept=$(sed -n 's/^.*\baccept *= *\([0-9.]*\)%.*$/\1/p' "$LOG" | tail -n1)"
