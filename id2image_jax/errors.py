"""Errors a user can fix, and the exit codes the command line gives them.

The library raises these for bad input: the command line (`id2image`)
prints their message as one line, ``id2image: error: ...``, and exits
with the class's code; any other exception is a bug and keeps its
traceback. Each class also derives from the built-in exception that code
catching the old behaviour expects (``FileNotFoundError`` / ``ValueError``),
so ``except ValueError`` still sees a bad input file.

Exit codes (`EXIT_CODES`): 0 success, 1 an unexpected error (a bug: the
traceback is printed), 2 a usage error, 3 a missing input, 4 an unusable
input, 5 a file operation the system refused (permission, full disk),
130 interrupted (Ctrl-C).
"""

from __future__ import annotations


class UserError(Exception):
  """Bad input that the user can fix; the message names what and where."""
  exit_code = 1


class UsageError(UserError, ValueError):
  """The command line or config is wrong: unknown command, kind or field,
  a value of the wrong type or outside its range, a KEY=VALUE without '='.
  """
  exit_code = 2


class OutputBusyError(UsageError):
  """Another running ``id2image`` job holds the output folder (its lock
  file): two jobs writing one folder would mix their files."""


class MissingInputError(UserError, FileNotFoundError):
  """A file or folder that the user named does not exist."""
  exit_code = 3


class BadInputError(UserError, ValueError):
  """A named input exists but cannot be used: unreadable, corrupt, of the
  wrong format or size, or empty (a folder with no usable image)."""
  exit_code = 4


# Kept as data so that the help text and the README quote one table.
EXIT_CODES = {
    0: 'success',
    1: 'unexpected error: a bug, printed with its traceback',
    UsageError.exit_code: 'usage error: bad command line, config field, '
                          'value or kind; an output folder another job '
                          'holds',
    MissingInputError.exit_code: 'a named file or folder does not exist',
    BadInputError.exit_code: 'an input cannot be used: unreadable, corrupt, '
                             'wrong format or size, empty',
    5: 'the system refused a file operation (permission denied, disk full, '
       'read-only file system)',
    130: 'interrupted (Ctrl-C)',
}
SYSTEM_REFUSED = 5
INTERRUPTED = 130
