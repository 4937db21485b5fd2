#!/usr/bin/env bash
# Creates .venv (if missing) and installs the pinned dev requirements and tritonprop (editable).
# Sourced by scripts/main.sh and scripts/test.sh; re-runs are quick because a stamp records
# what was installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TRITONPROP_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.tritonprop-installed"
want="$(cat "$root/requirements-dev.txt" "$root/setup.py" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q -r "$root/requirements-dev.txt"
    "$venv/bin/python" -m pip install -q -e "$root"
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
