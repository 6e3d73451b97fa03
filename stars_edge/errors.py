"""Domain exceptions. Library code raises these; only the CLI edge turns them into a message and exit code."""


class StarsEdgeError(Exception):
    """Base class: the message is one line that names the problem and what to do about it."""


class ConfigError(StarsEdgeError):
    """A configuration file or option is invalid (unknown key, wrong type, bad value)."""


class DataError(StarsEdgeError):
    """Input data is missing, unreadable, misaligned or inconsistent with what the model expects."""


class CheckpointError(StarsEdgeError):
    """A checkpoint is missing, corrupt or incompatible with the requested model or data."""


class TrainingError(StarsEdgeError):
    """Training cannot continue (e.g. a non-finite loss)."""


class ExportError(StarsEdgeError):
    """Exporting, quantising or building an engine failed."""


class ManifestError(StarsEdgeError):
    """An engine manifest is invalid, or the files it lists are missing or altered."""


class BackendUnavailableError(StarsEdgeError):
    """The requested inference backend (or its hardware) is not available on this machine."""


class OutputError(StarsEdgeError):
    """An output path cannot be written."""


class Interrupted(StarsEdgeError):
    """Ctrl-C or SIGTERM stopped a command after it saved what it could; the message says where it stopped.

    The CLI prints it with the command that continues the work (the same command with ``--resume``) and exits
    with code 130 (128 + SIGINT), as a shell does for an interrupted command.
    """

    exit_code = 130
