#!/usr/bin/env bash
# brittle against the newest releases of its dependencies, or against the lowest versions pyproject.toml
# declares, each in a fresh virtual environment: the CLI error tests (every command: --help, bad and missing
# options, Ctrl-C during an audit and resuming it) and a short smoke audit with its report.
#
#   scripts/check_versions.sh newest [VENV_DIR]   pip install --upgrade --upgrade-strategy eager
#   scripts/check_versions.sh lowest [VENV_DIR]   every ">=X" of [project.dependencies] pinned to "==X"
#
# torch is pinned to 2.13.0 in both (the CPU wheel that lies on this machine; the declared floor torch>=2.1
# is not installed here). click is not a direct dependency: the lowest check pins typer's own floor for it
# (typer 0.12 needs click>=8.0). About 1-3 minutes each with a warm pip cache on 2 cores.
set -euo pipefail
mode="${1:?usage: scripts/check_versions.sh newest|lowest [VENV_DIR]}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/brittle-$mode-run.XXXXXX")"
if [ -n "${2:-}" ]; then venv="$2"; trap 'rm -rf "$work"' EXIT
else venv="$work/venv"; trap 'rm -rf "$work"' EXIT; fi  # a throwaway venv goes with the run folder
TORCH="torch==2.13.0"
LOWEST_EXTRA=("click==8.0.0" "pytest==8.0.0" "pytest-timeout==2.2.0")

python3 -m venv "$venv"
py="$venv/bin/python"
pip_q=("$py" -m pip install -q --disable-pip-version-check)
case "$mode" in
  newest)
    "${pip_q[@]}" --upgrade --upgrade-strategy eager "$TORCH" -e "$root" pytest pytest-timeout
    ;;
  lowest)
    mapfile -t pins < <("$py" - "$root/pyproject.toml" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
for dep in deps:
    name, low = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+).*", dep).groups()
    if name.lower() != "torch":
        print(f"{name}=={low}")
EOF
    )
    "${pip_q[@]}" "$TORCH" "${pins[@]}" "${LOWEST_EXTRA[@]}"
    "${pip_q[@]}" --no-deps -e "$root"
    ;;
  *) echo "unknown mode '$mode': use newest or lowest" >&2; exit 2 ;;
esac

echo "== brittle with the $mode dependency versions ($venv):"
"$py" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
def v(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return "(not installed)"
print("   " + ", ".join(f"{p} {v(p)}" for p in ("torch", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow",
                                             "typer", "click", "rich", "tqdm", "jinja2", "matplotlib")))
EOF
cd "$root"
export OMP_NUM_THREADS=1
"$py" -m pytest -q -p no:cacheprovider tests/test_cli_errors.py
brittle="$venv/bin/brittle"
"$brittle" --quiet audit -m standard --limit 100 --eps 0.1,8/255 --out "$work/smoke"
"$brittle" --quiet report "$work/smoke"
"$py" - "$work/smoke" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
assert summary["n"] == 100 and 0.9 <= summary["clean_accuracy"] <= 1.0, summary
assert (run / "report.html").stat().st_size > 10_000
print(f"   smoke audit: {summary['n']} samples, clean accuracy {summary['clean_accuracy']:.2f}, report written")
EOF
"$brittle" --json zoo list | "$py" -c "import json, sys; assert json.load(sys.stdin)['models']"
echo "== $mode versions: OK"
