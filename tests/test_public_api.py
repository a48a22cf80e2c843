"""The public surface: binding names of ENGINE.md, the CLI's --help and --version."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

import splip_engine
from splip_engine.cli import main


def test_public_names_are_pinned():
    assert set(splip_engine.__all__) == {
        "SpLIP", "SpLIPConfig", "SpLIPError", "__version__", "build_model", "load_checkpoint", "save_checkpoint",
    }


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    commands = main.list_commands(None)
    assert "info" in commands
    for name in commands:
        help_text = runner.invoke(main, [name, "--help"]).output
        assert "Example" in help_text, f"`splip-engine {name} --help` has no example"


def test_version_and_info_json():
    runner = CliRunner()
    assert splip_engine.__version__ in runner.invoke(main, ["--version"]).output
    result = runner.invoke(main, ["info", "--json"])
    assert result.exit_code == 0 and '"torch"' in result.output


def test_user_error_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "splip_engine", "embed", "--engine", str(tmp_path / "none"),
         "--input", str(tmp_path), "--out", str(tmp_path / "store")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
