"""Which subcommand needs which optional dependency group (pip "extra"), checked before it runs.

A command whose extra is missing stops before doing anything (no half-made output
folder) with the extra's name and the exact command that installs it.
"""

from __future__ import annotations

import importlib.util

from facialattr.errors import MissingExtraError

# subcommand -> (extra in pyproject.toml, modules that extra provides and the command imports)
COMMAND_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "analyze": ("train", ("matplotlib",)),
    "train": ("train", ("tensorflow", "keras")),
    "evaluate": ("train", ("tensorflow", "keras")),
    "bench": ("bench", ("matplotlib",)),
}


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into a checkout's virtual environment, as the README does."""
    return f'.venv/bin/pip install -c constraints.txt -e ".[{extra}]"'


def check_extra(command: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra and its install command if ``command`` lacks one."""
    extra, modules = COMMAND_EXTRAS.get(command, (None, ()))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"facialattr {command} needs the '{extra}' extra (missing: {', '.join(missing)}); "
            f"install it with: {install_command(extra)}   (from a wheel: pip install 'facialattr[{extra}]')")
