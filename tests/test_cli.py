"""The command line, end to end in seconds."""
import re
import subprocess
import sys

import pytest

from rnnkit.cli import main


def test_demo_runs_and_reports_each_cell(capsys):
    assert main(["demo", "--delay", "2", "--steps", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("elman", "gated", "gru", "lstm"):
        assert re.search(rf"{name}\s+engine=\w+\s+test accuracy\s+\d+\.\d%", out), out
    assert "solved (>= 95%):" in out


def test_bad_option_value_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--steps", "0"])
    assert exit_info.value.code == 2
    assert "--steps must be at least 1, got 0" in capsys.readouterr().err


def test_console_script_help_and_version():
    result = subprocess.run([sys.executable, "-m", "rnnkit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
    result = subprocess.run([sys.executable, "-m", "rnnkit.cli", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == "rnnkit 0.1.0"
