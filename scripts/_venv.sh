# Sourced by scripts/*: create .venv and install the project (with EXTRAS) when needed.
# Reinstalls only when pyproject.toml or requirements.lock changed since the last install.
# requirements.lock (scripts/lock) pins the tested set: it is installed as constraints.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.mailgate-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q -c requirements.lock -e ".${EXTRAS:+[$EXTRAS]}"
    touch "$stamp"
fi
