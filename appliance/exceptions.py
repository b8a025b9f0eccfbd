"""The appliance's exceptions. Each message says what a person can do about it."""


class AomasError(Exception):
    """Base class: anything the command line reports as a one-line reason."""


class ConfigurationError(AomasError):
    """The configuration file or environment is wrong; fix the named key."""


class InvalidInput(AomasError):
    """The received data cannot be processed as it is; retrying will not help."""


class TransientError(AomasError):
    """A temporary failure (busy database, full disk, peer down); the run is retried."""


class StorageFull(TransientError):
    """Free disk space is below the configured watermark: a run waits and retries, a DICOM
    peer is told "out of resources" (0xA700) and sends again later."""


class NotFound(AomasError):
    """The named run, case, tile or label version does not exist."""


class Conflict(AomasError):
    """The request clashes with the current state (a newer version, a reused key); reload."""


class GateFailed(AomasError):
    """A model version's gate result does not allow the promotion asked for; the message says
    which figure failed (an admin may override with a written reason)."""


class NotPermitted(AomasError):
    """This person may not do this to this object, whatever their role (e.g. rate blind a
    tile they labelled); someone else has to."""
