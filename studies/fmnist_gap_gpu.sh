#!/usr/bin/env bash
# The capacity-gap study at ResNet scale on one GPU: the `gpu` profile of studies/fmnist_gap (Fashion-MNIST, the
# whole training split with crop + flip, the CIFAR zoo's resnet8 student and resnet20 / resnet56 / resnet32x4
# teachers, bf16 autocast, 3 seeds, every student running its teacher). Four worker processes share the GPU.
# Written for under 8 minutes on one H100-class GPU; resumable: rerun it after any interruption.
#
#   studies/fmnist_gap_gpu.sh [OUT]     from the repository root, the project installed (README)
#
# The report goes to docs/results/fmnist_gap_gpu.md, the stages under OUT (default ~/aidkd-runs/fmnist-gap-gpu).
# Fashion-MNIST must be on disk where the data loader looks (AIDKD_DATA, or Debian's dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$HOME/aidkd-runs/fmnist-gap-gpu}
case "$(python -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null || echo none)" in
  True) ;;
  False) echo "error: torch sees no CUDA GPU; run this on a machine with one (the CPU study: --profile axis)" >&2; exit 2 ;;
  *) echo "error: torch is not importable here; install the project first (README)" >&2; exit 2 ;;
esac
start=$(date +%s)
python -m studies.fmnist_gap --profile gpu --workers "${WORKERS:-4}" --out "$out" \
  --report docs/results/fmnist_gap_gpu.md
echo "fmnist-gap, gpu profile: $(( $(date +%s) - start )) s of wall time"
