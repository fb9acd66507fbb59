"""What can go wrong, as exit codes: one place maps every error to the code a command returns.

Exit codes of every ``body4d`` command (README "Exit codes"): 0 done, 1 a bug (traceback
logged), 2 bad input (a file, prompt, setting or checkpoint; one line says what and how to fix
it), 3 out of memory, 4 interrupted (Ctrl-C, SIGTERM or Cancel).
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_INTERRUPTED = 4

# The epilog of ``body4d --help`` and of every subcommand's ``--help``.
EXIT_CODES_HELP = (
    "exit codes: 0 done, 1 a bug (traceback in the log), 2 bad input (one line on stderr says what "
    "and how to fix it), 3 out of memory, 4 interrupted (Ctrl-C or SIGTERM)"
)


class InputError(ValueError):
    """Bad user input (a video, prompt, masks folder, run folder or setting); the message names
    what is wrong and how to fix it."""


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc`` (see the module doc)."""
    from body4d.jobs import Cancelled
    from models.errors import CheckpointError
    from models.frames import PromptError

    if isinstance(exc, KeyboardInterrupt | Cancelled):
        return EXIT_INTERRUPTED
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch.cuda's
        return EXIT_OUT_OF_MEMORY
    if isinstance(exc, InputError | PromptError | CheckpointError):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (multi-line reports joined), or its type name if it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def require_folder_path(path: Path, what: str) -> None:
    """Check that ``path`` is a folder or can be created as one (no file on the way).

    Args:
        path: the folder.
        what: how the user named it, for the message (e.g. ``--output_dir``).

    Raises:
        InputError: ``path`` or one of its parents is an existing file.
    """
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == path else f"cannot be created: {folder} is a file"
                raise InputError(f"{what} {path} {where}, not a folder: pass a folder (created if missing)")
            return
