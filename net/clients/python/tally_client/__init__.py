"""Python client of Tally (`tallyd`), protocol `tally/2` over QUIC with mutual TLS."""

from .client import Client, Subscription, connect
from . import codec as codec_module
from .errors import ERROR_CODES, ERROR_NAMES, ProtocolError, TallyError, error_name
from .types import (
    Account,
    CaptureLien,
    Chain,
    Command,
    Condition,
    CreateAccount,
    CreateCurrency,
    CreateLien,
    Credit,
    Currency,
    Entry,
    EntryInfo,
    EventAddStep,
    EventConfirm,
    EventCreate,
    EventFail,
    EventRecord,
    EventStart,
    EventSummary,
    Finding,
    Hotspots,
    Lien,
    Line,
    Operation,
    Outcome,
    RawCommand,
    Record,
    ReleaseLien,
    SetAccountState,
    Statement,
    StatementLine,
    Status,
    Tick,
    Transfer,
    Verification,
)

__version__ = "0.2.0"

__all__ = [
    "connect", "Client", "Subscription", "TallyError", "ProtocolError", "ERROR_CODES", "ERROR_NAMES",
    "error_name", "Account", "CaptureLien", "Chain", "Command", "Condition", "CreateAccount",
    "CreateCurrency", "CreateLien", "Credit", "Currency", "Entry", "EntryInfo", "EventAddStep",
    "EventConfirm", "EventCreate", "EventFail", "EventRecord", "EventStart", "EventSummary", "Finding",
    "Hotspots", "Lien", "Line", "Operation", "Outcome", "RawCommand", "Record", "ReleaseLien",
    "SetAccountState", "Statement", "StatementLine", "Status", "Tick", "Transfer", "Verification",
]
