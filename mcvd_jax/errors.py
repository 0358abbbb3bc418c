"""The base of the project's own errors: problems with what the user gave (a config value, a
dataset, a workdir, a checkpoint, a file), whose message says what is wrong and what to do.

`main` and the other command-line tools print such an error's message alone and exit with status
1; any other exception is a bug and keeps its traceback. Each concrete error also derives from the
builtin it refines (ValueError, RuntimeError, FileNotFoundError), so callers may catch either.
"""


class ProjectError(Exception):
  """An error the user can fix from its message alone."""
