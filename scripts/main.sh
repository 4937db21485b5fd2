#!/usr/bin/env bash
# The main job: set up, report how tritonprop will run here, self-check every kernel (forward and
# backward) against torch, and train the numpy-autodiff MLP (until the GPU models land).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
tritonprop info
tritonprop selfcheck
tritonprop train mlp-numpy
