//! The wire protocol, version 2 (`PROTOCOL.md`): frames, the messages they
//! carry, and the codec between the two. Transport-free: nothing here
//! touches a socket but `frame`'s stream readers.

pub mod codec;
pub mod convert;
pub mod frame;
pub mod message;

pub use tally_engine::codec::{command, wire};

pub use codec::{decode_request, decode_response, encode_request, encode_response};
pub use wire::DecodeError;
