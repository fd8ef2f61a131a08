# Sourced by scripts/run and scripts/test: make .venv and install what the
# project needs, once per change of pyproject.toml (a stamp keeps re-runs quick).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

extras=${EVENTVAULT_EXTRAS:-dev}
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "eventvault needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
hash=$(sha256sum pyproject.toml | cut -c1-16)
# dev includes server, so a dev install satisfies a server run.
if [ ! -f ".venv/.stamp-$hash-$extras" ] && [ ! -f ".venv/.stamp-$hash-dev" ]; then
  echo "==> installing eventvault[$extras] into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
  find .venv -maxdepth 1 -name '.stamp-*' ! -name ".stamp-$hash-*" -delete
  touch ".venv/.stamp-$hash-$extras"
fi
