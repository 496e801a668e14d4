"""Errors and the table of stable error codes (PROTOCOL.md, "Error codes")."""

from __future__ import annotations

from typing import Optional

# Stable codes with the names PROTOCOL.md gives them. PROTOCOL.md names only
# some codes of the ranges it declares (1-16 malformed commands, 100-118
# refused by the ledger's state); the others are kept by number and named
# ``error_<n>`` (see ``error_name``). Code 2 ``invalid_amount`` comes from the
# client's brief, not from PROTOCOL.md.
ERROR_NAMES: dict[int, str] = {
    2: "invalid_amount",
    15: "command_too_large",
    16: "reserved_id",
    108: "insufficient_funds",
    111: "id_reused_with_different_content",
    200: "busy",
    201: "shutting_down",
    202: "permission_denied",
    203: "malformed_request",
    204: "frame_too_large",
    205: "history_unavailable",
    206: "timeout",
    207: "unavailable",
}

# The ranges PROTOCOL.md declares, every code in them gets a name.
for _n in list(range(1, 17)) + list(range(100, 119)):
    ERROR_NAMES.setdefault(_n, f"error_{_n}")
del _n

ERROR_CODES: dict[str, int] = {name: code for code, name in ERROR_NAMES.items()}

INVALID_AMOUNT = 2
COMMAND_TOO_LARGE = 15
RESERVED_ID = 16
INSUFFICIENT_FUNDS = 108
ID_REUSED_WITH_DIFFERENT_CONTENT = 111
BUSY = 200
SHUTTING_DOWN = 201
PERMISSION_DENIED = 202
MALFORMED_REQUEST = 203
FRAME_TOO_LARGE = 204
HISTORY_UNAVAILABLE = 205
TIMEOUT = 206
UNAVAILABLE = 207


def error_name(code: int) -> Optional[str]:
    """The stable name of ``code``; ``None`` for 0 (success)."""
    if code == 0:
        return None
    return ERROR_NAMES.get(code, f"error_{code}")


class TallyError(Exception):
    """A request refused as a whole (an ``Error`` response) or a client-side
    failure (timeout 206, unavailable 207, invalid_amount 2 found locally)."""

    def __init__(self, code: int, name: Optional[str] = None, message: str = ""):
        self.code = int(code)
        self.name = name if name is not None else (error_name(self.code) or "ok")
        self.message = message
        super().__init__(f"{self.name} ({self.code}): {message}" if message else f"{self.name} ({self.code})")

    def __reduce__(self):  # keep pickling (e.g. pytest-xdist) working
        return (self.__class__, (self.code, self.name, self.message))


class ProtocolError(TallyError):
    """A response that does not decode as PROTOCOL.md says: the client refuses
    to guess. Code 203 with the name ``malformed_response``."""

    def __init__(self, message: str, code: int = MALFORMED_REQUEST, name: str = "malformed_response"):
        super().__init__(code, name, message)

    def __reduce__(self):
        return (self.__class__, (self.message, self.code, self.name))
