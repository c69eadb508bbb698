#!/usr/bin/env bash
# Installs driftd into a virtual environment: the one install procedure of the container image.
#
# The Dockerfile RUNs this script, and tests/deploy runs it too (with --dry-run, and for real
# when DRIFTD_TEST_INSTALL=1), so a broken install step fails CI even where Docker is missing.
#
# Usage: deploy/install.sh [--dry-run] PREFIX [SOURCE]
#   PREFIX   the virtual environment to create (e.g. /opt/driftd)
#   SOURCE   the driftd source tree (default: the repository this script lives in)
# Environment:
#   PYTHON           interpreter that creates the venv (default: python3)
#   TORCH_INDEX_URL  where torch comes from (default: the CPU wheels). For CUDA, e.g.
#                    https://download.pytorch.org/whl/cu128
#   DRIFTD_EXTRAS    optional extras to install, comma separated (e.g. "s3")
#
# Every package at the version constraints.txt pins (the versions the tests passed with).
# torch is installed first, alone, from TORCH_INDEX_URL: installing it together with driftd
# from PyPI would pull the multi-GB CUDA build even for a CPU image. Then driftd and its other
# dependencies come from the default index; pip sees torch already satisfied and leaves it.
# The last step runs the installed `driftd`.
set -euo pipefail

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 [--dry-run] PREFIX [SOURCE]" >&2
    exit 2
fi
prefix=$1
source_dir=${2:-$(cd "$(dirname "$0")/.." && pwd)}
python=${PYTHON:-python3}
torch_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
extras=${DRIFTD_EXTRAS:-}

for file in pyproject.toml constraints.txt; do
    if [ ! -f "$source_dir/$file" ]; then
        echo "install.sh: no $file in $source_dir" >&2
        exit 2
    fi
done
constraints=$source_dir/constraints.txt

# The torch pin of constraints.txt (e.g. torch==2.13.0).
torch_requirement=$(grep -E '^torch==' "$constraints" || true)
if [ "$(printf '%s\n' "$torch_requirement" | grep -c '^torch==')" -ne 1 ]; then
    echo "install.sh: expected one torch==X line in $constraints" >&2
    exit 2
fi

target=$source_dir
if [ -n "$extras" ]; then
    target="$source_dir[$extras]"
fi

step() {
    # Print each command; run it unless this is a dry run.
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

step "$python" -m venv "$prefix"
step "$prefix/bin/pip" install --no-cache-dir --upgrade pip
step "$prefix/bin/pip" install --no-cache-dir --index-url "$torch_index" "$torch_requirement"
step "$prefix/bin/pip" install --no-cache-dir -c "$constraints" "$target"
# Smoke test of what was installed: the console script starts and validates its defaults.
step "$prefix/bin/driftd" --version
step env -u DRIFTD_CONFIG "$prefix/bin/driftd" config
