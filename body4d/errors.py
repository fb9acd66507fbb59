"""What can go wrong, as exit codes: one place maps every error to the code a command returns.

Exit codes of every ``body4d`` command (README "Exit codes"): 0 done, 1 a bug (traceback
logged), 2 bad input (a file, prompt, setting or checkpoint; one line says what and how to fix
it), 3 out of memory, 4 interrupted (Ctrl-C or Cancel).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_INTERRUPTED = 4


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
