#!/usr/bin/env bash
# Install each env's pip section into a fresh Python venv (what `--use-conda` does after conda
# has put python and pip in place) and import every module that the env's rule scripts import.
# Not part of the test suite (it installs four environments); run by hand:
#   bash envs/check_pip_sections.sh [python3.11]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-python3}
SCRATCH=$(mktemp -d /tmp/avprobe-envs.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
for env in "$ROOT"/envs/*.yaml; do
    name=$(basename "$env" .yaml)
    echo "== $name"
    "$PY" -m venv "$SCRATCH/$name"
    "$PY" - "$env" > "$SCRATCH/$name.txt" <<'PYEOF'
import sys, yaml
env = yaml.safe_load(open(sys.argv[1]))
for dep in env["dependencies"]:
    if isinstance(dep, dict):
        print("\n".join(dep["pip"]))
PYEOF
    # torch first: its CPU wheel where the index has one (a bare resolve may pick a CUDA build)
    grep -q '^torch==' "$SCRATCH/$name.txt" && "$SCRATCH/$name/bin/pip" install -q --disable-pip-version-check "$(grep '^torch==' "$SCRATCH/$name.txt")" 2>&1 | grep -v "is ignored" || true
    "$SCRATCH/$name/bin/pip" install -q --disable-pip-version-check -r "$SCRATCH/$name.txt" 2>&1 | grep -v "is ignored" || true
    modules=$(cd "$ROOT/tests" && "$PY" -c "
import sys; sys.path.insert(0, '../workflow/scripts')
from test_envs import rule_envs, third_party_imports
from pathlib import Path
mods = set()
for rule, env, script in rule_envs():
    if env.name == '$name.yaml':
        mods |= third_party_imports(script)
print(' '.join(sorted(mods - {'snakemake'})))")
    echo "importing: $modules"
    (cd "$SCRATCH" && "$SCRATCH/$name/bin/python" -c "
import importlib, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
print('ok', len(sys.argv) - 1, 'modules')" $modules)
done
echo "ENV CHECK PASSED"
