#!/usr/bin/env bash
# Everything issue 10 asks to check on a lent GPU, in one run (a few minutes of device time):
#   1. benchmarks/gpu_sd15.py: full-size SD-1.5 (random weights), bf16, 512²: train step and peak
#      memory at batch 1 and 4, a 50-step image, batch-8 images/s against diffusers' pipeline;
#   2. the CLI on --device cuda: train (bf16; 8-bit Adam when bitsandbytes is there), generate
#      (--batch 4), mix, eval, and the memory panel's CUDA row in metrics.jsonl.
# Usage: bash benchmarks/gpu_check.sh [PYTHON]   (default: .venv/bin/python, else python3)
#        DEV=cpu bash benchmarks/gpu_check.sh     (a smoke run of the same lines on a CPU; no figures)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export STYLER_HOME=$(mktemp -d /tmp/styler-gpu-XXXX) HF_HUB_OFFLINE=1
S="$PY -m styler.cli.main"
DEV=${DEV:-cuda}; SMOKE=$([ "$DEV" = cpu ] && echo --cpu-smoke || echo "--repeats 20")
step() { echo; echo "== $*"; }
step "doctor"; $S doctor
step "gpu_sd15.py"; $PY benchmarks/gpu_sd15.py $SMOKE
step "data synth"
$S data synth gpu/water --kind watercolor --n 8 --size 64
$S data synth gpu/ink --kind calligraphy --n 8 --size 64
step "train --precision bf16"
$S train gpu/water --base tiny --steps 30 --resolution 64 --precision bf16 --rank 8 | tail -n 2
grep -h '"allocated"' "$STYLER_HOME"/runs/*/metrics.jsonl | tail -n 1
OPT=adamw
if [ "$DEV" != cpu ] && $PY -c "import bitsandbytes" 2>/dev/null; then OPT=adamw8bit; fi
step "train --optimizer $OPT"
$S train gpu/ink --base tiny --steps 30 --resolution 64 --precision bf16 --rank 8 --optimizer $OPT | tail -n 2
step "generate / mix / eval on --device $DEV"
time $S generate "wtrc, a lake" --adapter gpu/water=0.8 --n 8 --batch 4 --steps 20 --device $DEV --json | tail -n 2
time $S mix gpu/water=0.5 gpu/ink=0.5 "wtrc, a lake" --steps 20 --device $DEV 2>&1 | tail -n 2
time $S eval gpu/water --clip tiny --n 8 --batch 8 --device $DEV --json | tail -n 5
step "records"; $S registry ls outputs --json 2>/dev/null | grep -o '"dtype": "[a-z0-9]*"' | sort | uniq -c
