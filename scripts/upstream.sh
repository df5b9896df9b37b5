#!/usr/bin/env bash
# Would qbus still pass with the newest releases of everything it uses? Builds a
# throw-away venv with the newest versions pyproject.toml allows (ignoring the lock),
# prints which packages moved against requirements-lock.txt, then runs the test suite
# there. Not part of CI: the README's commands install the lock, so they do not change
# from day to day; this is how we learn what the next `bash scripts/lock.sh --upgrade`
# would bring (docs/operations.md, "Dependencies and the lock").
#
#   bash scripts/upstream.sh                 # the whole suite (CI=true for the short soak)
#   bash scripts/upstream.sh tests/test_protocol.py -x    # pytest arguments pass through
#   KEEP=1 bash scripts/upstream.sh          # keep the venv (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
make_venv .venv # for uv, at the lock's version

work=$(mktemp -d "${TMPDIR:-/tmp}/qbus-upstream.XXXXXX")
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; fi
echo "resolving the newest releases into $work …" >&2
.venv/bin/uv pip compile --quiet pyproject.toml --extra test --upgrade --no-header \
    -o "$work/newest.txt"
.venv/bin/uv venv --quiet --python "$(pick_python)" "$work/venv"
.venv/bin/uv pip sync --quiet --python "$work/venv/bin/python" "$work/newest.txt"
.venv/bin/uv pip install --quiet --python "$work/venv/bin/python" --no-deps -e .

"$work/venv/bin/python" - "$LOCK_FILE" "$work/newest.txt" <<'PY'
import re
import sys

from packaging.markers import Marker  # in the test extra

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(path):
    """Name -> version of each pin whose environment marker holds for this Python."""
    found = {}
    for line in open(path, encoding="utf-8"):
        m = PIN.match(line.rstrip("\n"))
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate()):
            found[m.group(1).lower()] = m.group(2)
    return found


locked, newest = pins(sys.argv[1]), pins(sys.argv[2])
moved = sorted(n for n in locked.keys() & newest.keys() if locked[n] != newest[n])
print(f"{len(moved)} of {len(locked)} locked packages have newer releases:")
for name in moved:
    print(f"  {name:<32} {locked[name]:>14} -> {newest[name]}")
for name in sorted(newest.keys() - locked.keys()):
    print(f"  {name:<32} {'(new)':>14} -> {newest[name]}")
for name in sorted(locked.keys() - newest.keys()):
    print(f"  {name:<32} {locked[name]:>14} -> (gone)")
PY

echo "running the suite against the newest releases…" >&2
# The lock test checks .venv against the lock; this venv is not the lock on purpose.
exec "$work/venv/bin/python" -m pytest -p no:cacheprovider \
    --deselect tests/test_packaging.py::test_the_venv_holds_exactly_the_lock "$@"
