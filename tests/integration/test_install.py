"""Story: an operator installs mailgate as a service with scripts/install, twice (an
upgrade), and the unit passes systemd's own checks.

These tests need systemd-analyze (Debian: the systemd package) and a package index for
pip's build of the checkout: they fail, never skip, without them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"
UNIT = REPO / "systemd" / "mailgate.service"
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: install the systemd package to run this test")
    return found


def run_install(root: Path) -> subprocess.CompletedProcess[str]:
    # Only mailgate itself into the venv: its dependencies are pip's business, not the
    # installer's, and would make the test take minutes.
    env = {**os.environ, "PIP_NO_DEPS": "1"}
    return subprocess.run(
        [str(INSTALL), "--root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installer_runs_twice_into_a_temporary_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run_install(root)
    assert first.returncode == 0, first.stderr
    config = root / "etc/mailgate/relay.toml"
    assert config.read_text() == (REPO / "relay.toml.example").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "var/lib/mailgate").is_dir()
    assert (root / "var/lib/mailgate").stat().st_mode & 0o777 == 0o750
    assert os.access(root / "opt/mailgate/.venv/bin/mailgate", os.X_OK)
    unit = root / "etc/systemd/system/mailgate.service"
    assert unit.read_text() == UNIT.read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/mailgate.service"
    assert wants.is_symlink()

    config.write_text(config.read_text() + "\n# the operator's edit\n")
    second = run_install(root)
    assert second.returncode == 0, second.stderr
    assert "kept" in second.stdout
    assert config.read_text().endswith("# the operator's edit\n")  # never overwritten
    assert wants.is_symlink()

    # The installed unit, its Exec paths pointed into the root (verify checks that the
    # commands exist).
    checked = tmp_path / "mailgate.service"
    checked.write_text(unit.read_text().replace("/opt/mailgate/", f"{root}/opt/mailgate/"))
    verify = subprocess.run(
        [systemd_analyze(), "verify", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stderr.strip() == "", verify.stderr


def test_unit_has_reload_watchdog_and_rates_ok_in_systemd_analyze_security() -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
    got = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for mailgate.service: ([\d.]+) (\w+)", got.stdout)
    assert found is not None, got.stdout + got.stderr
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, got.stdout
    assert found.group(2) == "OK"
    doc = (REPO / "docs" / "operations.md").read_text()
    assert f"exposure {exposure}" in doc, "docs/operations.md must give the current figure"
