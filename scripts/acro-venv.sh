#!/usr/bin/env bash
# Make the separate Python environment that output checking uses: ACRO (the SACRO project's
# statistical disclosure control library, https://github.com/AI-SDC/ACRO) at .venv-acro in the
# repository root. Researchers make their outputs with ACRO inside the TRE; datafirst's own tests
# run ACRO here to make outputs with planted disclosive cells. ACRO 1.0.2 pins pandas <= 2.3.3
# (and its own numpy, statsmodels, ...), older than datafirst's environment may hold, so it gets
# a venv of its own rather than an extra of datafirst: datafirst never imports ACRO, it reads the
# results.json and files that ACRO's finalise() writes (docs/deliver.md, "Output checking").
#
# Idempotent: when .venv-acro already imports the pinned ACRO, it does nothing.
# Usage: scripts/acro-venv.sh [VENV_DIR]   (default: .venv-acro at the repository root)
set -euo pipefail
ACRO_VERSION=1.0.2
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$repo/.venv-acro}
python=${PYTHON:-python3}

works() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$ACRO_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import acro  # noqa: F401  the import is the check: ACRO and its pinned dependencies load
sys.exit(0 if version("acro") == sys.argv[1] else 1)
PY
}

if works; then
    echo "ACRO $ACRO_VERSION is ready in $venv"
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "acro==$ACRO_VERSION"
if ! works; then
    echo "error: ACRO $ACRO_VERSION was installed in $venv but does not import; remove $venv and run $0 again" >&2
    exit 1
fi
echo "ACRO $ACRO_VERSION is ready in $venv"
