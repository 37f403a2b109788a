"""The `dsm` command line: every command listed, only the one run imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dsm.cli import COMMANDS, build_parser, named_command


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_top_level_help_lists_every_command_without_importing_torch() -> None:
    probe = _run("import sys\nfrom dsm.cli import main\ntry:\n    main(['--help'])\n"
                 "except SystemExit:\n    pass\n"
                 "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().endswith("NO-TORCH")
    for path in COMMANDS:
        assert path[0] in probe.stdout
    group = _run("import sys\nfrom dsm.cli import main\ntry:\n    main(['data', '--help'])\n"
                 "except SystemExit:\n    pass\nprint('torch' in sys.modules)\n")
    assert "synth" in group.stdout and "tokenizer" in group.stdout
    assert group.stdout.strip().endswith("False")


def test_a_command_imports_only_its_own_module() -> None:
    probe = _run("import sys\nfrom dsm.cli import main\ntry:\n"
                 "    main(['data', 'merge', '--help'])\nexcept SystemExit:\n    pass\n"
                 "print(sorted(m for m in sys.modules if m.startswith('dsm.commands.')))\n")
    assert probe.returncode == 0, probe.stderr
    assert "usage: dsm data merge" in probe.stdout
    assert probe.stdout.strip().splitlines()[-1] == "['dsm.commands.arguments', 'dsm.commands.data_merge']"


def test_every_command_builds_and_named_command_finds_it() -> None:
    parser = build_parser()  # imports them all: each defines its arguments
    for path, (module, help_text) in COMMANDS.items():
        assert named_command([*path, "--help"]) == path
        assert help_text and module.startswith("dsm.")
    args = parser.parse_args(["serve", "--port", "1"])
    assert args.port == 1
    assert named_command(["--help"]) is None and named_command(["nope"]) is None


def test_an_unknown_command_is_an_error_naming_the_choices(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from dsm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["transcirbe", "x.wav"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'transcirbe'" in capsys.readouterr().err


def test_command_descriptions_keep_their_line_breaks() -> None:
    """A backslash ending a line of a (non-raw) docstring joins it to the next one, so a
    shell example's continuation would vanish from `--help`."""
    import ast
    import importlib.util

    from dsm.cli import COMMANDS

    for module_name, _ in COMMANDS.values():
        spec = importlib.util.find_spec(module_name)
        assert spec is not None and spec.origin is not None, module_name
        source = open(spec.origin, encoding="utf-8").read()
        node = ast.parse(source).body[0]
        assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant), module_name
        written = ast.get_source_segment(source, node)
        assert written is not None and node.value.value.count("\n") == written.count("\n"), \
            module_name
