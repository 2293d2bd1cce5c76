"""User-facing errors: one line naming the file/utterance and what to do, printed by the CLI without a traceback."""


class MlmaError(Exception):
    """An error caused by the user's input or environment (bad file, missing package, wrong layout).

    The message must name the offending file / utterance / option and say what to do about it.
    The CLI prints it as a single line and exits with status 1.
    """


class MissingDependencyError(MlmaError):
    """An optional package (mamba-ssm, k2, kaldifst, ...) is needed for what was asked; the message carries the install hint."""
