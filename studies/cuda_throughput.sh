#!/usr/bin/env bash
# The CUDA columns of docs/results/throughput.md and the time of a whole 240-epoch resnet32x4 -> resnet8x4 KD
# run, on one GPU. Run from the repository root with aidkd installed (pip install -e .); about 6-8 minutes on
# an H100-class GPU (the whole-run estimate builds a 162-view cache of 50000 images once).
#
#   bash studies/cuda_throughput.sh [NOTE]      # NOTE: a sentence naming the machine, for the reports
set -euo pipefail
note="${1:-one GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
mkdir -p docs/results
# (a) default, (b) view cache, (c) the common codebase's loop, (d) student only: 5 interleaved rounds
python -m aidkd.cli bench throughput --device cuda --rounds 5 --steps 50 \
    --report docs/results/throughput_cuda.md --note "$note"
# a whole run, extrapolated from 2 real epochs on 50000 random CIFAR-100-format images, cache off and on
python -m aidkd.cli bench throughput --full-run --device cuda --epochs 2 --num-train 50000 \
    --report docs/results/full_run_cuda.md --note "$note"
