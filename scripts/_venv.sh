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
# Installed editable, the project's modules are read from src/: byte-compile them (only what
# changed since). Where PYTHONDONTWRITEBYTECODE is set, every process would compile them
# from source again: the relay, each of its children, and each of the suite's relays.
.venv/bin/python -m compileall -q src >/dev/null
