#!/usr/bin/env sh
# bptt in a shell pipeline: under --json, stdout holds exactly one strict JSON document
# (tables go to stderr, --quiet drops them), so any JSON tool can read it.
#
#   sh examples/pipeline.sh                      # uses `bptt` and `python3` from PATH
#   BPTT=".venv/bin/bptt" PYTHON=.venv/bin/python sh examples/pipeline.sh
set -eu
BPTT=${BPTT:-bptt}
PYTHON=${PYTHON:-python3}

echo "== 1. the whole document, pretty-printed by python -m json.tool (first lines)"
$BPTT paths --json --quiet | "$PYTHON" -m json.tool | head -n 12

echo "== 2. one field, extracted with python"
$BPTT paths --json --quiet | "$PYTHON" -c '
import json, sys
doc = json.load(sys.stdin)
r = doc["results"]
walks, steps = r["naive"]["path_walks"], r["efficient"]["recursion_steps"]
diff, seed = r["max_abs_difference"], doc["config"]["seed"]
print(f"naive path walks: {walks}  recursion steps: {steps}  max |difference|: {diff:.3g}  (seed {seed})")
'

echo "== 3. the same with jq, if it is installed"
if command -v jq >/dev/null 2>&1; then
    $BPTT gradcheck --json --quiet --activation relu --loss mse | jq -r '.results.max_rel_error | to_entries[] | "\(.key): \(.value)"'
else
    echo "(jq not found; skipped)"
fi

echo "== 4. the exit code carries the verdict: a finite-difference step of 0.5 is far too large"
if $BPTT gradcheck --json --quiet --fd-step 0.5 >/dev/null; then
    echo "gradcheck passed"
else
    echo "gradcheck failed with exit code $? (4: a check failed, as it should with --fd-step 0.5)"
fi
