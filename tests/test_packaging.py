"""What a fresh machine gets: the lock is what is installed, and no test engine leaks out.

scripts/setup.sh installs requirements-lock.txt (written by scripts/lock.sh) with
``uv pip sync``; these tests hold the venv the suite runs in to that file, so an
install step that drifts from the lock (a ``pip install`` of something unpinned, a
lock that was not regenerated after pyproject.toml changed) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import distribution, distributions
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements-lock.txt"
PLUGIN_SITE = Path(__file__).parent / "plugins" / "site"

# Installed beside the lock on purpose: qbus itself (editable) and the venv's own pip.
NOT_LOCKED = {"qbus", "pip"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_pins() -> dict[str, str]:
    """Name → version of every lock line whose environment marker holds here."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = _PIN.match(line)
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate()):
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """Name → version of what is installed in this venv (not what the tests add to the path)."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonicalize_name(d.metadata["Name"]): d.version for d in distributions(path=paths)}


def test_lock_parser_reads_markers():
    pins = locked_pins()
    assert len(pins) > 100 and pins["msgspec"].count(".") == 2
    # One package locked twice, once per Python: only this Python's pin is kept.
    numpy_lines = [ln for ln in LOCK.read_text().splitlines() if ln.startswith("numpy==")]
    assert len(numpy_lines) >= 1 and pins["numpy"] in "".join(numpy_lines)


def test_the_venv_holds_exactly_the_lock():
    pins, have = locked_pins(), installed()
    missing = sorted(name for name in pins if name not in have)
    wrong = sorted(
        f"{n} {have[n]} (lock: {pins[n]})" for n in pins if n in have and have[n] != pins[n]
    )
    extra = sorted(n for n in have if n not in pins and n not in NOT_LOCKED)
    hint = (
        "run `bash scripts/setup.sh` (it installs the lock); "
        "after editing pyproject.toml, `bash scripts/lock.sh`"
    )
    assert not missing, f"locked but not installed: {missing}; {hint}"
    assert not wrong, f"installed at another version than the lock: {wrong}; {hint}"
    assert not extra, f"installed but not in the lock: {extra}; {hint}"


def test_lock_is_current_with_pyproject():
    # Every requirement of pyproject.toml (core and every extra in `test`) is in the lock.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        wanted += [r for r in reqs if not r.startswith("qbus[")]
    names = {canonicalize_name(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in wanted}
    lock_text = LOCK.read_text()
    locked = {
        canonicalize_name(m.group(1))
        for m in re.finditer(r"^([A-Za-z0-9][\w.\-]*)==", lock_text, re.M)
    }
    assert names <= locked, f"not in the lock: {sorted(names - locked)}; run `bash scripts/lock.sh`"


def test_test_engines_are_not_installed_in_the_venv():
    # The flipper engine is found through the dist-info folder conftest.py puts on the
    # path, never through the venv's site-packages.
    flipper = distribution("qbus-flipper")
    assert Path(str(flipper.locate_file(""))).resolve() == PLUGIN_SITE.resolve()
    site_packages = [Path(p) for p in sys.path if p.endswith("site-packages")]
    assert site_packages
    for site in site_packages:
        assert not list(site.glob("qbus_flipper*")), f"a test engine is installed in {site}"


def test_qbus_engines_outside_the_tests_lists_no_test_engine():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-m", "qbus", "engines"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    names = {line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip()}
    assert {"qiskit-aer", "reference"} <= names
    assert not names & {"flipper", "hostile", "flaky"}, names
    # ... while the test processes, which have tests/plugins/site on their path, see it.
    seen = subprocess.run(
        [sys.executable, "-m", "qbus", "engines"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(PLUGIN_SITE)},
        cwd=ROOT,
    )
    assert any(line.startswith("flipper") for line in seen.stdout.splitlines()), seen.stdout


def test_setup_installs_the_lock_with_uv_sync():
    # The README's commands go through scripts/setup.sh; it must install the lock itself.
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "uv pip sync" in setup and "$LOCK_FILE" in setup
    assert 'pip install -q -e ".[' not in setup
