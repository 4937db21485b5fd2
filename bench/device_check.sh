#!/usr/bin/env bash
# The whole GPU check in one call (see GPU.md in the shared design notes): install the working
# tree without network, run the test suite on CUDA, run the benchmark report, and print a short
# summary last. Logs, bench.md and bench.json go to $OUT.
#
#   bash bench/device_check.sh
#   PYTHON=.venv/bin/python OUT=/tmp/dc DEVICE_CHECK_PYTEST_ARGS="-k module_checks_input_dims" bash bench/device_check.sh
#
# Environment:
#   PYTHON                    interpreter (default /opt/torch/.venv/bin/python3, else python3)
#   OUT                       output folder (default ./bench-out)
#   SITE                      install folder (default /tmp/site)
#   DEVICE_CHECK_PYTEST_ARGS  extra pytest arguments, split on whitespace (e.g. -k to run a subset)
#   DEVICE_CHECK_TEST_TIMEOUT, DEVICE_CHECK_BENCH_TIMEOUT  seconds per stage (default 300, 240)
# Exits non-zero when the install, the tests or the report fail.
set -uo pipefail

PYTHON=${PYTHON:-/opt/torch/.venv/bin/python3}
command -v "$PYTHON" >/dev/null || PYTHON=python3
OUT=${OUT:-bench-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute, because the next line changes directory
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
read -r -a pytest_args <<< "${DEVICE_CHECK_PYTEST_ARGS:-}"

echo "== install into $SITE with $PYTHON"
# --upgrade replaces a copy left in $SITE by an earlier run.
"$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target "$SITE" . \
    >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; echo "install failed"; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# Python puts the current directory first on sys.path, and the repo root's tritonprop/ folder
# (without kernels/, ops/ or bench/ inside) would shadow the installed package. PYTHONSAFEPATH
# (Python 3.11+) leaves the current directory out.
export PYTHONSAFEPATH=1
# Compile the kernels for the GPU; never interpret them here.
unset TRITON_INTERPRET
imported_from=$("$PYTHON" -c 'import tritonprop; print(tritonprop.__file__)') || exit 1
echo "tritonprop imports from $imported_from"
case "$imported_from" in
    "$SITE"/*) ;;
    *) echo "expected tritonprop from $SITE; the tests would not run the installed copy"; exit 1 ;;
esac

echo "== tests (log: $OUT/tests.log)"
# Time limits keep a hang from eating the whole device lease; the logs written so far come back.
# No -x: one GPU run should report every failure, not just the first.
timeout "${DEVICE_CHECK_TEST_TIMEOUT:-300}" "$PYTHON" -m pytest tests -q -p no:cacheprovider "${pytest_args[@]}" \
    >"$OUT/tests.log" 2>&1
tests_rc=$?

echo "== benchmark report (log: $OUT/bench.log)"
timeout "${DEVICE_CHECK_BENCH_TIMEOUT:-240}" "$PYTHON" -m tritonprop.bench.report --out "$OUT" >"$OUT/bench.log" 2>&1
bench_rc=$?

echo
echo "tests (exit $tests_rc): $(tail -n 1 "$OUT/tests.log")"
if [ "$bench_rc" -ne 0 ]; then
    echo "benchmark report failed (exit $bench_rc); end of $OUT/bench.log:"
    tail -n 20 "$OUT/bench.log"
fi
if [ -f "$OUT/bench.md" ]; then
    echo
    cat "$OUT/bench.md"
fi
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
