"""One base class for every error facialattr raises on purpose, with specific subclasses.

Callers catch :class:`FacialAttrError` to tell "the user or the environment is
wrong" (clear message, no traceback) from programming errors. :class:`ErrorKind`
names why one input became an error row; the exit statuses of every command are here too.
"""

from enum import StrEnum


class FacialAttrError(Exception):
    """Base class of all deliberate facialattr errors."""


class ContractError(FacialAttrError):
    """The model contract (config.pbtxt parameters, labels) is missing or inconsistent."""


class ModelRepositoryError(FacialAttrError):
    """A model repository on disk is missing, incomplete or invalid."""


class ServerError(FacialAttrError):
    """The embedded Triton server could not be started, or failed while running."""


class PortInUseError(ServerError):
    """A port the server was asked to bind is already taken."""


class UnsupportedPlatformError(ServerError):
    """The embedded server cannot run on this platform (use docker-compose instead)."""


class InputError(FacialAttrError):
    """An input (image, video, folder, file) cannot be read; the message names it."""


class OutputError(FacialAttrError):
    """An output cannot be written safely or at all: a link at its name, a file of another user, a full disk."""


class OutputBusyError(OutputError):
    """Another run is writing the same output (it holds the output's lock); the message names its process."""


class DatasetError(FacialAttrError):
    """A training data set is missing files or has malformed rows."""


class InferenceError(FacialAttrError):
    """The server rejected or failed an inference request after all retries."""


class ServerUnavailableError(InferenceError):
    """No endpoint answered within the retry deadline; the run can resume later."""


class ExportError(FacialAttrError):
    """A trained model cannot be exported: missing files, wrong interface, failed conversion."""


class ParityError(ExportError):
    """The exported ONNX model does not reproduce the Keras model within the stated tolerance."""


class MissingExtraError(FacialAttrError):
    """A command needs an optional dependency group (a pip "extra") that is not installed."""


# Exit statuses of the ``facialattr`` command, one home for every subcommand and test.
EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_SOME_INPUTS_FAILED = 3
EXIT_NO_INPUTS = 4  # the given paths held no image to score
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our stdout went away (`| head`), as the shell reports it


class ErrorKind(StrEnum):
    """Why one input became an error row: the ``error_kind`` column, summaries and the server's bytes twin.

    A ``StrEnum``, so a kind compares equal to (and is written as) its value: rows written by
    earlier versions read back unchanged.
    """

    NOT_FOUND = "not_found"
    NOT_A_FILE = "not_a_file"  # a folder, FIFO, device or socket
    UNREADABLE = "unreadable"  # permission denied, an I/O error, a folder that cannot be listed
    OUTSIDE_ROOTS = "outside_roots"  # a symbolic link leading outside the given folders
    CHANGED = "changed"  # the file was replaced or changed while it was read
    EMPTY = "empty"
    TOO_LARGE = "too_large"  # over --max-file-bytes or --max-decode-bytes, or out of memory decoding
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    DECODER_FAILURE = "decoder_failure"  # the decoder itself failed: not necessarily the file's fault
    SERVER = "server"  # the server failed the request, not the image: a resumed run scores it again
    INFERENCE = "inference"  # what runs before 0.2 wrote for SERVER; read, never written
    INPUT = "input"  # an input error that names no kind of its own

    @property
    def retryable(self) -> bool:
        """True when the server, not the input, failed: ``score --resume`` scores such a row again."""
        return self in (ErrorKind.SERVER, ErrorKind.INFERENCE)

    @classmethod
    def of(cls, value: "str | ErrorKind | None") -> "ErrorKind":
        """The kind named ``value``; an empty or unknown name (a row of a newer version) is :attr:`INPUT`."""
        try:
            return cls(value) if value else cls.INPUT
        except ValueError:
            return cls.INPUT
