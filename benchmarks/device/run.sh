#!/usr/bin/env bash
# The GPU figures, in one call on a machine with a CUDA device (nothing to download; under 8 minutes):
#
#     bash benchmarks/device/run.sh            # from the repository root, with distill installed
#
# Images per second of a student step, a live-teacher step, a cached step and an augmented-cache step for
# resnet32x4 -> resnet8x4 at batch 64 and 256 on random CIFAR-shaped data, in fp32 and bf16, with and without
# torch.compile; then the fused token-level loss against the plain one at a vocabulary of 128k. One table each.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python benchmarks/device/steps.py "$@"
