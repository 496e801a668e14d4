//! Framing on a QUIC stream (`PROTOCOL.md`, "Frame header"): `len: u32 |
//! version: u8 (2) | kind: u8 | reserved: u16 (0) | request id: u64 | body`,
//! little-endian. Lengths are checked before anything is allocated.

use crate::limits::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES};

pub const KIND_REQUEST: u8 = 1;
pub const KIND_RESPONSE: u8 = 2;
/// The protocol version every frame carries.
pub const VERSION: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub id: u64,
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Longer than `MAX_FRAME_BYTES`: the stream cannot be resynchronized.
    TooLarge { len: u64 },
    /// An unknown kind byte.
    BadKind(u8),
    /// A version other than [`VERSION`].
    BadVersion(u8),
    /// Reserved header bytes that are not zero.
    BadReserved,
    /// The stream ended inside a frame.
    Truncated,
    /// The transport failed.
    Io(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { len } => {
                write!(
                    f,
                    "frame of {len} bytes is over the limit of {MAX_FRAME_BYTES}"
                )
            }
            FrameError::BadKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::BadVersion(v) => write!(
                f,
                "protocol version {v} is not spoken here; this server speaks version {VERSION}"
            ),
            FrameError::BadReserved => write!(f, "reserved frame header bytes must be zero"),
            FrameError::Truncated => write!(f, "the stream ended inside a frame"),
            FrameError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl FrameHeader {
    pub fn decode(b: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, FrameError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (version, kind) = (b[4], b[5]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        if len as usize > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge { len: len as u64 });
        }
        if version != VERSION {
            return Err(FrameError::BadVersion(version));
        }
        if kind != KIND_REQUEST && kind != KIND_RESPONSE {
            return Err(FrameError::BadKind(kind));
        }
        if b[6] != 0 || b[7] != 0 {
            return Err(FrameError::BadReserved);
        }
        Ok(FrameHeader {
            len,
            kind,
            id: u64::from_le_bytes(id),
        })
    }

    /// The header's 16 bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut b = [0u8; FRAME_HEADER_BYTES];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4] = VERSION;
        b[5] = self.kind;
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b
    }
}

/// Appends one frame to `out`.
pub fn encode(kind: u8, id: u64, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len: body.len() as u64,
        });
    }
    let header = FrameHeader {
        len: body.len() as u32,
        kind,
        id,
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    Ok(())
}

/// Splits the first frame off `buf`: `Ok(None)` when more bytes are needed.
pub fn split(buf: &[u8]) -> Result<Option<(FrameHeader, Vec<u8>, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let h = FrameHeader::decode(head)?;
    let end = FRAME_HEADER_BYTES + h.len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(h.len as usize);
    body.extend_from_slice(&buf[FRAME_HEADER_BYTES..end]);
    Ok(Some((h, body, end)))
}

/// Reads one frame from a QUIC stream: `Ok(None)` at a clean end of stream.
pub async fn read(
    recv: &mut quinn::RecvStream,
) -> Result<Option<(FrameHeader, Vec<u8>)>, FrameError> {
    let Some(h) = read_header(recv).await? else {
        return Ok(None);
    };
    let body = read_body(recv, h.len as usize).await?;
    Ok(Some((h, body)))
}

/// Reads a frame header: `Ok(None)` at a clean end of stream.
pub async fn read_header(recv: &mut quinn::RecvStream) -> Result<Option<FrameHeader>, FrameError> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(FrameError::Io(e.to_string())),
    }
    FrameHeader::decode(&head).map(Some)
}

/// Reads a body of `len` bytes. The buffer grows as bytes arrive (doubling,
/// to at most twice what arrived and never past `len`): a header alone
/// allocates nothing.
pub async fn read_body(recv: &mut quinn::RecvStream, len: usize) -> Result<Vec<u8>, FrameError> {
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: len as u64 });
    }
    let mut body = Vec::new();
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => {
                let need = body.len() + chunk.bytes.len();
                if need > body.capacity() {
                    // Double, but never past the declared length.
                    let target = need.max(body.capacity() * 2).min(len);
                    body.reserve_exact(target - body.len());
                }
                body.extend_from_slice(&chunk.bytes)
            }
            Ok(None) => return Err(FrameError::Truncated),
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    Ok(body)
}
