# Shared by the scripts in this folder (sourced, not run): the Python to use and the
# locked installer.

LOCK_FILE=requirements-lock.txt

# The first Python 3.11+ on PATH ($PYTHON first when set).
pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "qbus needs Python 3.11 or newer (none found on PATH)" >&2
    return 1
}

# make_venv DIR: a virtual environment in DIR with the lock's version of uv in it.
# uv installs the lock (`uv pip sync` makes the venv hold exactly what the lock names).
make_venv() {
    local dir=$1 py
    py=$(pick_python)
    if [ ! -x "$dir/bin/python" ]; then
        if ! "$py" -m venv "$dir" 2>/dev/null; then
            # Debian's system Python ships venv separately.
            echo "installing python3-venv (needs root)…" >&2
            rm -rf "$dir"
            if [ "$(id -u)" = 0 ]; then
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            else
                sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null
            fi
            "$py" -m venv "$dir"
        fi
    fi
    local uv_pin
    uv_pin=$(grep -m1 -E '^uv==' "$LOCK_FILE" | cut -d' ' -f1)
    if [ "$("$dir/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "${uv_pin#uv==}" ]; then
        "$dir/bin/python" -m pip install -q --disable-pip-version-check "$uv_pin"
    fi
}
