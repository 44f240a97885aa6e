"""The errors mtsys raises for what a user can fix: bad config, bad data, an unknown task, an
incompatible, corrupt or locked system directory, an export that cannot be made.

Every `UserError` message is one line naming the bad value and what was expected, so the
command-line entry points print it alone and exit with status 2; any other exception is a bug
(or an environment failure) and keeps its traceback. Errors caused by another exception chain it
(`raise ... from err`) so the cause stays visible to `--verbosity` and to debuggers.

The classes that were ValueErrors before this hierarchy existed still are, so callers catching
ValueError keep working.
"""


class UserError(Exception):
  """Base of errors a user can fix; the message says what was wrong and what was expected."""


class ConfigError(UserError, ValueError):
  """A config that cannot be used; the message names file, field and expectation."""


class DataError(UserError, ValueError):
  """A task's data is missing, unreadable or inconsistent with its spec."""


class DataFileNotFoundError(DataError, FileNotFoundError):
  """A file a task's spec names does not exist."""


class UnknownTaskError(UserError, ValueError):
  """A task name that is not in the config or the system."""


class IncompatibleSystemError(UserError, ValueError):
  """A system directory that cannot be used as asked (incompatible config, removed task, ...)."""


class StoreError(UserError):
  """Base class of store errors."""


class CorruptFileError(StoreError):
  """A stored file does not match its checksum or cannot be parsed."""


class IncompatibleSchemaError(StoreError):
  """The directory was written by an incompatible mtsys schema version."""


class SystemNotFoundError(StoreError):
  """No system at the given directory."""


class StoreAccessError(StoreError):
  """A stored file could not be read or written (permissions, a transient remote error)."""


class MissingComponentError(StoreError, KeyError):
  """A component a path or a caller names is in neither the system nor its fork sources."""

  def __str__(self) -> str:  # KeyError would quote the message
    return str(self.args[0]) if self.args else ""


class LockHeldError(StoreError):
  """Another live process holds the system directory's run lock."""


class TrainingError(UserError):
  """Training produced nothing usable (e.g. no child of an active phase could be kept)."""


class ExportError(UserError, ValueError):
  """An export that cannot be made as asked (bad target, version, task or validation)."""


class CheckpointError(ConfigError):
  """A pretrained checkpoint that cannot be imported as a root (`mtsys.pretrained`): a missing
  key, a shape that disagrees with the named size, an unsupported pooling or stem, a bad size."""
