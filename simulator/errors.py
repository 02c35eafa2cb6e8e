"""The simulator's error hierarchy. Pure.

Every message is one line that names the file, the line (when there is one) and the fault,
e.g. ``traces/x/series.csv:17: timestamps out of order (1200 after 1260)``, so the CLI can print
it as-is and exit non-zero without a traceback.
"""


class SimulatorError(Exception):
    """Base of every error the simulator raises on purpose (bad input, impossible request)."""


class TraceError(SimulatorError):
    """A trace file or directory cannot be read, or a trace operation was asked the impossible."""


class ProfileError(SimulatorError):
    """A replica profile name is unknown or a profile file is invalid."""
