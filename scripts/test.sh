#!/usr/bin/env bash
# The test run: set up, then the default suite (tests/, without `slow`) and the benchmark files
# at tiny shapes (bench/, CPU timings meaningless), in two worker processes (pytest-xdist; `-n 0`
# runs in one). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
status=0
python -m pytest tests bench -q -n 2 "$@" || status=$?
# 5 means pytest collected nothing (say, a -k that matches no test): not a failure of the code.
if [ "$status" -eq 5 ]; then
    status=0
fi
exit "$status"
