//! The canonical byte encoding of commands: the `COMMAND` layout of
//! `net/PROTOCOL.md` (little-endian, fixed forms for the hot operations,
//! every byte checked on the way in). Clients send it, and the log stores
//! it (`wal/FORMAT.md`): one encoding, written once per command by whoever
//! holds it, and a pure function of the command.

pub mod command;
pub mod wire;

pub use command::{decode_command, decoded_size, encode_command, get_command, put_command};
pub use wire::{DecodeError, Reader, Writer};
