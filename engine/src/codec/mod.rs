//! The canonical byte encoding of commands: the `COMMAND` layout of
//! `net/PROTOCOL.md` (little-endian, fixed forms for the hot operations,
//! every byte checked on the way in). Clients send it, and the log stores
//! it (`wal/FORMAT.md`): one encoding, written once per command by whoever
//! holds it, and a pure function of the command.

pub mod command;
pub mod wire;

pub use command::{
    decode_command, decoded_size, encode_command, get_command, put_command, read_command_into,
    transfer_in_place,
};
pub use wire::{DecodeError, Reader, Writer};

/// The wire bytes of a batch's commands as a client sent them, kept beside
/// the decoded commands so the log can store them verbatim: command `i` is
/// `bytes[spans[i].0..spans[i].1]`. Usually the request's own body, moved
/// here (nothing is copied).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Encoded {
    /// Room for `commands` commands of `bytes` bytes in all.
    pub fn with_capacity(commands: usize, bytes: usize) -> Encoded {
        Encoded {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(commands),
        }
    }

    /// The commands at `spans` (start, end) of `bytes`, in order; `None`
    /// when a span ends before it starts or runs past the bytes.
    pub fn over(bytes: Vec<u8>, spans: Vec<(u32, u32)>) -> Option<Encoded> {
        let fits = spans
            .iter()
            .all(|&(s, e)| s <= e && e as usize <= bytes.len());
        fits.then_some(Encoded { bytes, spans })
    }

    /// Adds the next command's bytes (a copy).
    pub fn push(&mut self, command: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(command);
        debug_assert!(self.bytes.len() <= u32::MAX as usize);
        self.spans.push((start as u32, self.bytes.len() as u32));
    }

    /// The bytes of command `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.spans.get(i)?;
        self.bytes.get(start as usize..end as usize)
    }

    /// How many commands.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Keeps only the commands `keep` says yes to, in order.
    pub fn retain(&self, mut keep: impl FnMut(usize) -> bool) -> Encoded {
        let mut out = Encoded::with_capacity(self.len(), self.bytes.len());
        for i in 0..self.len() {
            if keep(i) {
                if let Some(b) = self.get(i) {
                    out.push(b);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod encoded_tests {
    use super::Encoded;

    #[test]
    fn commands_are_kept_apart_and_filtered_in_order() {
        let mut e = Encoded::with_capacity(3, 6);
        e.push(b"ab");
        e.push(b"");
        e.push(b"cde");
        assert_eq!(
            (e.len(), e.get(0), e.get(1), e.get(2), e.get(3)),
            (3, Some(&b"ab"[..]), Some(&b""[..]), Some(&b"cde"[..]), None)
        );
        let kept = e.retain(|i| i != 1);
        assert_eq!(
            (kept.len(), kept.get(0), kept.get(1)),
            (2, Some(&b"ab"[..]), Some(&b"cde"[..]))
        );
        let over = Encoded::over(b"xxabyycde".to_vec(), vec![(2, 4), (7, 9)]).unwrap();
        assert_eq!(
            (over.get(0), over.get(1)),
            (Some(&b"ab"[..]), Some(&b"de"[..]))
        );
        assert!(Encoded::over(b"ab".to_vec(), vec![(1, 3)]).is_none());
        assert!(Encoded::over(b"ab".to_vec(), vec![(2, 1)]).is_none());
    }
}
