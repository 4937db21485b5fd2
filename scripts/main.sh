#!/usr/bin/env bash
# The main job: set up, report how tritonprop will run here, and self-check every kernel
# (forward and backward) against torch.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
tritonprop info
tritonprop selfcheck
