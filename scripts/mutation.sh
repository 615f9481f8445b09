#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the engine, ops, optimizers and file I/O. Not run in CI.
#
#   scripts/mutation.sh            # run (or resume) and print the score per module
#   scripts/mutation.sh --fresh    # delete mutants/ first: every mutant is tested again
#   JOBS=2 scripts/mutation.sh     # parallel workers (default 1; the machine is shared)
#   scripts/mutation.sh --score    # only print the score of the last run
#
# What is mutated and which tests run is set in [tool.mutmut] in pyproject.toml. The triage of
# the survivors (tests added, or why a mutant is equivalent) is in scripts/MUTATION.md; inspect
# one with `python -m mutmut show NAME`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import mutmut" 2>/dev/null; then
    python -m pip install "mutmut>=3.3,<4"
fi

# Hypothesis examples are derandomised so a mutant is killed or not the same way every run.
export HYPOTHESIS_PROFILE=ci

score_only=0
for arg in "$@"; do
    case "$arg" in
        --fresh) rm -rf mutants ;;
        --score) score_only=1 ;;
        *) echo "usage: $0 [--fresh] [--score]" >&2; exit 2 ;;
    esac
done

if [ "$score_only" = 0 ]; then
    # The mutants' pytest sessions each leave a temp folder (73 GB over the 2026-12-07 run,
    # which filled the disk): keep them in one place and clear it before and after.
    mkdir -p mutants
    export TMPDIR="$PWD/mutants/tmp"
    rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
    # mutmut exits non-zero when mutants survive; the score below is the verdict.
    nice -n 10 python -m mutmut run --max-children "${JOBS:-1}" || true
    rm -rf "$TMPDIR"
fi

mkdir -p mutants
python -m mutmut results --all true > mutants/results.txt
python - mutants/results.txt <<'PY'
import collections
import sys

# lines look like "    tinygrad_cnn.ops.loss.x_SoftmaxCrossEntropy__mutmut_3: killed"
counts = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    name, sep, status = line.strip().rpartition(": ")
    if not sep or "__mutmut_" not in name:
        continue
    module = name.split("__mutmut_")[0].rsplit(".", 1)[0]
    counts[module][status] += 1
# A timeout or a segfault counts as caught (the mutant made a test hang or crash); "not checked"
# are not counted yet.
total = collections.Counter()
head = f"{'module':30} {'caught':>6} {'tested':>6} {'score':>7}   survived  no-tests  timeout  unchecked"
print(head)
for module in sorted(counts):
    c = counts[module]
    total.update(c)
    tested = sum(c.values()) - c["not checked"]
    caught = c["killed"] + c["timeout"] + c["segfault"]
    score = f"{100 * caught / tested:6.1f}%" if tested else "    -- "
    print(f"{module:30} {caught:6d} {tested:6d} {score}   {c['survived']:8d} {c['no tests']:9d} "
          f"{c['timeout']:8d} {c['not checked']:10d}")
tested = sum(total.values()) - total["not checked"]
if tested:
    caught = total["killed"] + total["timeout"] + total["segfault"]
    print(f"{'overall':30} {caught:6d} {tested:6d} {100 * caught / tested:6.1f}%   "
          f"{total['survived']:8d} {total['no tests']:9d} {total['timeout']:8d} "
          f"{total['not checked']:10d}")
else:
    print("no tested mutants: run without --score first")
PY
