#!/usr/bin/env bash
# The whole GPU check in one call of at most 10 minutes on a cold machine (see GPU.md in the shared
# design notes, and "The GPU check" in docs/testing.md for the budgets and how to read the output).
# Five stages, in order, each under its own time limit, each writing $OUT/<n>-<stage>.log as it goes:
#   1 install  the working tree into $SITE, without network
#   2 warm     Triton's cache: every kernel launch of the benchmark cases compiled for sm_90 in
#              parallel (python -m tritonprop.bench.static_sm90 --jobs $(nproc))
#   3 smoke    every op of the registry forward and backward against torch, in bf16, fp16 and fp32
#              (python -m tritonprop.selfcheck --dtypes ...), one process per case, in parallel
#   4 bench    the benchmark report at the BENCHMARKS.md shapes ($OUT/bench/bench.md and .json)
#   5 tests    the test suite on CUDA, the op tests first, for the time that is left
# After each stage a line (stage, exit status, seconds, Triton cache entries) goes to
# $OUT/stages.tsv; the table is printed last. $OUT holds 8 files, the most the device tool brings
# back: the five logs, stages.tsv, bench/bench.md, bench/bench.json.
#
#   bash bench/device_check.sh
#   DEVICE_CHECK_OPS=layer_norm DEVICE_CHECK_PYTEST_ARGS="-k module_checks_input_dims" OUT=/tmp/dc \
#       PYTHON=.venv/bin/python bash bench/device_check.sh        # a short dry run, also without a GPU
#
# Without CUDA it still runs every stage (the kernels interpreted on the CPU, the static compiles
# for sm_90 as on the GPU): a dry run of the script, whose results say nothing about the GPU.
#
# Environment:
#   PYTHON                    interpreter (default /opt/torch/.venv/bin/python3, else python3)
#   OUT                       output folder (default ./bench-out)
#   SITE                      install folder (default /tmp/site)
#   TRITON_CACHE_DIR          Triton's cache, shared by every stage (default ~/.triton/cache)
#   DEVICE_CHECK_DEADLINE     seconds from the start by which every stage has ended (default 540,
#                             leaving a minute of a 10-minute call for a stage's grace and the table)
#   DEVICE_CHECK_WARM_TIMEOUT, DEVICE_CHECK_SMOKE_TIMEOUT, DEVICE_CHECK_BENCH_TIMEOUT,
#   DEVICE_CHECK_TEST_TIMEOUT seconds at most for each stage (default 120, 90, 270, and the rest
#                             up to the deadline for the tests); INSTALL_TIMEOUT likewise (60)
#   DEVICE_CHECK_STAGES       the stages after install to run (default "warm smoke bench tests")
#   DEVICE_CHECK_OPS          comma-separated ops of the registry: warm, smoke and bench only these
#                             (default: every op, and the bench report's whole-model cases too)
#   DEVICE_CHECK_DTYPES       the smoke's dtypes (default bf16,fp16,fp32)
#   DEVICE_CHECK_JOBS         compile processes of the warm stage (default: nproc)
#   DEVICE_CHECK_BENCH_ARGS   extra options of the report, split on whitespace (e.g. --quick)
#   DEVICE_CHECK_TESTS        test files, in order (default: the op tests first, then the rest)
#   DEVICE_CHECK_TEST_WORKERS pytest-xdist workers where xdist is installed (default half the
#                             cores, at most 8; under 2: no xdist)
#   DEVICE_CHECK_PYTEST_ARGS  extra pytest arguments, split on whitespace (e.g. -k to run a subset)
# Exits non-zero when a stage fails: the install, a smoke case, the report, or a test (a test
# stage stopped by its time limit with no failure so far is not a failure).
set -uo pipefail

PYTHON=${PYTHON:-/opt/torch/.venv/bin/python3}
command -v "$PYTHON" >/dev/null || PYTHON=python3
OUT=${OUT:-bench-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute, because the next line changes directory
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
WORK=${TMPDIR:-/tmp}/tritonprop-device-check  # what would not fit in $OUT's 8 files
mkdir -p "$WORK"
export PYTHON OUT SITE WORK
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
mkdir -p "$TRITON_CACHE_DIR"
# A stage stopped by its time limit keeps what it printed: no output waits in Python's buffers.
export PYTHONUNBUFFERED=1
# Python puts the current directory first on sys.path, and the repo root's tritonprop/ folder
# (without kernels/, ops/ or bench/ inside) would shadow the installed package. PYTHONSAFEPATH
# (Python 3.11+) leaves the current directory out.
export PYTHONSAFEPATH=1
# Compile the kernels for the GPU; never interpret them here (without CUDA, tritonprop turns the
# interpreter on itself at import).
unset TRITON_INTERPRET

DEADLINE=${DEVICE_CHECK_DEADLINE:-540}
GRACE=15  # after a stage's limit, its signal; after this many seconds more, SIGKILL
export DEVICE_CHECK_OPS=${DEVICE_CHECK_OPS:-}
export DEVICE_CHECK_DTYPES=${DEVICE_CHECK_DTYPES:-bf16,fp16,fp32}
export DEVICE_CHECK_JOBS=${DEVICE_CHECK_JOBS:-$(nproc)}
workers=$(( $(nproc) / 2 )); (( workers > 8 )) && workers=8
export DEVICE_CHECK_TEST_WORKERS=${DEVICE_CHECK_TEST_WORKERS:-$workers}
read -r -a bench_args <<< "${DEVICE_CHECK_BENCH_ARGS:-}"
read -r -a pytest_args <<< "${DEVICE_CHECK_PYTEST_ARGS:-}"
# The op tests first, those whose kernels use tl.dot before the others: they are where compiled
# code is most likely to differ from the interpreter's. Then double backward, the two files with a
# few CUDA tests, and every other file (models, compile, OpInfo, data, docs), which run on CPU
# tensors or touch no kernel and are covered by the CPU runs.
TESTS_FIRST="attention conv2d linear rnn lstm_gru multihead_attention batchnorm layernorm cross_entropy activations
             dropout double_backward_dense double_backward_norm_conv backend train"

STAGES=${DEVICE_CHECK_STAGES:-warm smoke bench tests}
rm -f "$OUT"/[1-5]-*.log "$OUT/bench/bench.md" "$OUT/bench/bench.json"  # an earlier run's, locally
printf 'stage\texit\tseconds\ttriton_cache_entries\n' > "$OUT/stages.tsv"

cache_entries() {
    find "$TRITON_CACHE_DIR" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l
}

# run_stage N NAME LIMIT SIGNAL COMMAND...: COMMAND (a function of this script, or a program)
# under `timeout`, its output in $OUT/N-NAME.log as it goes; the stage's line in stages.tsv.
# The limit is cut to what is left before the deadline. Sets stage_rc.
run_stage() {
    local n=$1 name=$2 limit=$3 signal=$4
    shift 4
    local log="$OUT/$n-$name.log" left=$(( DEADLINE - SECONDS )) start=$SECONDS
    (( limit > left )) && limit=$left
    if (( limit < 10 )); then
        echo "== $n $name: skipped, ${left}s left before the ${DEADLINE}s deadline"
        echo "skipped: ${left}s left before the ${DEADLINE}s deadline" > "$log"
        stage_rc=skipped
    else
        echo "== $n $name (at most ${limit}s; log $log)"
        timeout -s "$signal" -k "$GRACE" "$limit" bash -c '"$@"' "$name" "$@" > "$log" 2>&1
        stage_rc=$?
        if (( stage_rc == 124 || stage_rc == 137 )); then
            echo "== stopped by the stage's limit of ${limit}s (exit $stage_rc)" >> "$log"
        fi
    fi
    printf '%s\t%s\t%s\t%s\n' "$n-$name" "$stage_rc" "$(( SECONDS - start ))" "$(cache_entries)" >> "$OUT/stages.tsv"
}

stage_install() {
    echo "$PYTHON -m pip install --no-deps --no-build-isolation --no-index --upgrade --target $SITE ."
    # --upgrade replaces a copy left in $SITE by an earlier run.
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target "$SITE" . || return 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    local imported_from
    imported_from=$("$PYTHON" -c 'import tritonprop; print(tritonprop.__file__)') || return 1
    echo "tritonprop imports from $imported_from"
    case "$imported_from" in
        "$SITE"/*) ;;
        *) echo "expected tritonprop from $SITE; the stages would not run the installed copy"; return 1 ;;
    esac
    "$PYTHON" -m tritonprop info
    "$PYTHON" -c 'import torch; print("cuda:", torch.cuda.get_device_name() if torch.cuda.is_available() else
                  "none: a dry run, kernels interpreted on the CPU")'
    echo "Triton cache: $TRITON_CACHE_DIR ($(cache_entries) entries); $(nproc) cores"
}

# The bench groups of the ops $1 (comma-separated ops of the registry), comma-separated; every
# group, the whole models too, when $1 is empty.
bench_groups() {
    "$PYTHON" - "$1" <<'EOF'
import sys
from tritonprop import registry
from tritonprop.bench import cases
ops = [op for op in sys.argv[1].split(",") if op]
groups = [registry.get(op).bench for op in ops] if ops else list(cases.CASES)
print(",".join(dict.fromkeys(group for group in groups if group is not None)))
EOF
}

stage_warm() {
    local groups ops=()  # static_sm90's default: every bench group of an op (not the whole models)
    if [ -n "$DEVICE_CHECK_OPS" ]; then
        groups=$(bench_groups "$DEVICE_CHECK_OPS") || return 1
        [ -z "$groups" ] && { echo "no bench group among $DEVICE_CHECK_OPS: nothing to warm"; return 0; }
        ops=(--ops "$groups")
    fi
    echo "python -m tritonprop.bench.static_sm90 ${ops[*]} --jobs $DEVICE_CHECK_JOBS --out $WORK/static"
    "$PYTHON" -m tritonprop.bench.static_sm90 "${ops[@]}" --jobs "$DEVICE_CHECK_JOBS" --out "$WORK/static" || return 1
    echo
    cat "$WORK/static/static-sm90.md"  # the report itself: $OUT has no file to spare for it
}

stage_smoke() {
    set -o pipefail  # a case's exit status, not sed's
    local cases case pid rc=0 pids=()
    # One process per self-check case (its ops, comma-separated), all at once: the compiles of the
    # small launches are the cost, and they are CPU-bound. Each line is prefixed with its case.
    cases=$("$PYTHON" - "$DEVICE_CHECK_OPS" <<'EOF'
import sys
from tritonprop import selfcheck
for label in selfcheck.cases_for([op for op in sys.argv[1].split(",") if op] or None):
    print(label.replace(" ", ""))
EOF
    ) || return 1
    for case in $cases; do
        ( "$PYTHON" -m tritonprop.selfcheck --dtypes "$DEVICE_CHECK_DTYPES" --ops "$case" 2>&1 \
              | sed -u "s/^/[$case] /" ) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || rc=1
    done
    return $rc
}

stage_bench() {
    local groups
    groups=$(bench_groups "$DEVICE_CHECK_OPS") || return 1
    [ -z "$groups" ] && { echo "no bench group among $DEVICE_CHECK_OPS: nothing to measure"; return 0; }
    "$PYTHON" -m tritonprop.bench.report --out "$OUT/bench" --ops "$groups" "$@"
}

stage_tests() {
    local files=() name workers=()
    if [ -n "${DEVICE_CHECK_TESTS:-}" ]; then
        read -r -a files <<< "$DEVICE_CHECK_TESTS"
    else
        for name in $TESTS_FIRST; do
            [ -f "tests/test_$name.py" ] && files+=("tests/test_$name.py")
        done
        for name in tests/test_*.py; do
            [[ " ${files[*]} " == *" $name "* ]] || files+=("$name")
        done
    fi
    # pytest-xdist (absent from the GPU machine as GPU.md records it; listed in its image since)
    # compiles in several processes at once, as the other stages do.
    if (( DEVICE_CHECK_TEST_WORKERS > 1 )) && "$PYTHON" -c 'import xdist' 2>/dev/null; then
        workers=(-n "$DEVICE_CHECK_TEST_WORKERS")
    fi
    # No -x: one GPU run should report every failure, not just the first. The stage's limit sends
    # SIGINT, on which pytest stops and still prints its summary of the failures so far.
    echo "python -m pytest -q ${workers[*]} ${files[*]} $*"
    "$PYTHON" -m pytest -q -p no:cacheprovider "${workers[@]}" "${files[@]}" "$@"
}

export TESTS_FIRST
export -f cache_entries bench_groups stage_install stage_warm stage_smoke stage_bench stage_tests

status=0
echo "device check: output in $OUT, deadline ${DEADLINE}s, Triton cache $TRITON_CACHE_DIR"
run_stage 1 install "${INSTALL_TIMEOUT:-60}" TERM stage_install
if [ "$stage_rc" != 0 ]; then
    cat "$OUT/1-install.log"
    echo "install failed"
    exit 1
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

for stage in $STAGES; do
    case "$stage" in
        warm)  run_stage 2 warm "${DEVICE_CHECK_WARM_TIMEOUT:-120}" TERM stage_warm ;;
        smoke) run_stage 3 smoke "${DEVICE_CHECK_SMOKE_TIMEOUT:-90}" TERM stage_smoke ;;
        bench) run_stage 4 bench "${DEVICE_CHECK_BENCH_TIMEOUT:-270}" TERM stage_bench "${bench_args[@]}" ;;
        tests) run_stage 5 tests "${DEVICE_CHECK_TEST_TIMEOUT:-$DEADLINE}" INT stage_tests "${pytest_args[@]}"
               if [ "$stage_rc" = 124 ] || [ "$stage_rc" = 137 ]; then
                   # Stopped by the limit: a failure only if a test failed before it.
                   grep -Eq '^(FAILED|ERROR) ' "$OUT/5-tests.log" && stage_rc=1 || stage_rc=0
               elif [ "$stage_rc" = 5 ]; then
                   stage_rc=0  # pytest collected nothing (a -k that matches no test): no failure
               fi ;;
        *) echo "unknown stage $stage in DEVICE_CHECK_STAGES (warm smoke bench tests)"; exit 2 ;;
    esac
    [ "$stage_rc" = 0 ] || [ "$stage_rc" = skipped ] || status=1
done

# The summary last, so that the end of the output holds it.
if [ -f "$OUT/bench/bench.md" ]; then
    echo
    cat "$OUT/bench/bench.md"
fi
echo
if [ -f "$OUT/3-smoke.log" ]; then
    echo "smoke ($DEVICE_CHECK_DTYPES): $(grep -c ': ok (' "$OUT/3-smoke.log") runs of a case in a dtype ok," \
         "$(grep -c ': FAILED (' "$OUT/3-smoke.log") failed"
    grep -E ': FAILED \(|differs from torch|Error' "$OUT/3-smoke.log" | head -n 20
fi
if [ -f "$OUT/5-tests.log" ]; then
    echo "tests: $(grep -E '(passed|failed|error|no tests ran)' "$OUT/5-tests.log" | tail -n 1)"
    grep -E '^(FAILED|ERROR) ' "$OUT/5-tests.log" | head -n 20
fi
[ -f "$OUT/4-bench.log" ] && grep -E ': [A-Za-z]*Error' "$OUT/4-bench.log" | head -n 10
echo
column -t -s $'\t' "$OUT/stages.tsv" 2>/dev/null || cat "$OUT/stages.tsv"
echo "total ${SECONDS}s; logs in $OUT; exit $status"
exit $status
