//! The frame and message decoders take untrusted bytes: no input may panic
//! them, every well-formed frame round-trips, and lengths are checked before
//! anything is allocated. (A proptest over arbitrary bytes stands in for a
//! cargo-fuzz target so that it runs in CI for a bounded time.)

use proptest::prelude::*;
use tally_engine::currency::CurrencyCode;
use tally_engine::{Command, Entry};
use tally_net::frame::{self, FrameError, KIND_REQUEST, KIND_RESPONSE};
use tally_net::limits::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES};
use tally_net::message::*;

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

/// Splits every frame off `bytes`, decoding each body both ways.
fn decode_all(mut bytes: &[u8]) -> Result<usize, FrameError> {
    let mut n = 0;
    while let Some((h, body, used)) = frame::split(bytes)? {
        assert!(used >= FRAME_HEADER_BYTES && used <= bytes.len());
        assert_eq!(body.len(), h.len as usize);
        let _ = decode_request(&body);
        let _ = decode_response(&body);
        bytes = &bytes[used..];
        n += 1;
    }
    Ok(n)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        proptest::collection::vec(
            (1u128..u128::MAX, 1u128..9, 1u128..9, 1u128..1_000_000),
            0..20
        )
        .prop_map(|ts| {
            Request::Submit(
                ts.into_iter()
                    .map(|(id, a, b, amt)| Command::from(Entry::transfer(id, a, b, amt, usd())))
                    .collect(),
            )
        }),
        any::<u128>().prop_map(Request::Account),
        any::<u128>().prop_map(Request::Entry),
        (any::<u128>(), any::<u64>(), any::<u32>()).prop_map(|(account, from_seq, limit)| {
            Request::Statement {
                account,
                from_seq,
                limit,
            }
        }),
        ".{0,40}".prop_map(|t| Request::Find {
            key: FindKey::Reference(t),
            from_ts: 0,
            to_ts: u64::MAX,
            limit: 10
        }),
        any::<u64>().prop_map(|from_seq| Request::Subscribe { from_seq }),
        Just(Request::Status),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        let _ = decode_all(&bytes);
    }

    #[test]
    fn framed_arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..1_024), id: u64) {
        let mut f = Vec::new();
        frame::encode(KIND_REQUEST, id, &body, &mut f).unwrap();
        prop_assert_eq!(decode_all(&f), Ok(1));
    }

    #[test]
    fn corrupted_requests_never_panic(r in request(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut body = encode_request(&r).unwrap().to_vec();
        for (at, x) in flips {
            if !body.is_empty() {
                let i = at % body.len();
                body[i] ^= x;
            }
        }
        let mut f = Vec::new();
        frame::encode(KIND_REQUEST, 1, &body, &mut f).unwrap();
        prop_assert_eq!(decode_all(&f), Ok(1));
    }

    #[test]
    fn requests_round_trip(r in request(), id: u64) {
        let body = encode_request(&r).unwrap();
        let mut f = Vec::new();
        frame::encode(KIND_REQUEST, id, &body, &mut f).unwrap();
        f.extend_from_slice(&f.clone());
        let (h, body, used) = frame::split(&f).unwrap().unwrap();
        prop_assert_eq!((h.id, h.kind, used * 2), (id, KIND_REQUEST, f.len()));
        prop_assert_eq!(decode_request(&body).unwrap(), r);
    }
}

#[test]
fn oversized_and_unknown_frames_are_refused_from_the_header() {
    let mut head = Vec::new();
    head.extend_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_le_bytes());
    head.push(KIND_REQUEST);
    head.extend_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        frame::split(&head),
        Err(FrameError::TooLarge { .. })
    ));
    head[..4].copy_from_slice(&0u32.to_le_bytes());
    head[4] = 9;
    assert_eq!(frame::split(&head).err(), Some(FrameError::BadKind(9)));
    head[4] = KIND_RESPONSE;
    assert!(frame::split(&head).unwrap().is_some());
    assert!(
        frame::split(&head[..5]).unwrap().is_none(),
        "a partial header waits for more"
    );
}

#[test]
fn outcomes_round_trip_through_their_wire_form() {
    use tally_engine::{Error, ErrorCode, Outcome};
    let all = [
        Outcome::Committed {
            seq: 4,
            timestamp: 9,
        },
        Outcome::Duplicate { seq: 4, code: None },
        Outcome::Duplicate {
            seq: 5,
            code: Some(ErrorCode::InsufficientFunds),
        },
        Outcome::Rejected {
            seq: Some(6),
            error: Error::new(ErrorCode::VersionConflict)
                .with_line(1)
                .with_subject(7)
                .with_version(3),
        },
        Outcome::Rejected {
            seq: None,
            error: Error::new(ErrorCode::InvalidAmount).with_text("1.001"),
        },
    ];
    for o in all {
        assert_eq!(WireOutcome::from(&o).to_outcome().unwrap(), o);
    }
    let bad = WireOutcome {
        code: 60_000,
        ..WireOutcome::from(&Outcome::rejected_early(ErrorCode::Busy.into()))
    };
    assert!(
        bad.to_outcome().is_err(),
        "an unknown code is a protocol error, not a panic"
    );
}

#[test]
fn development_certificates_carry_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    assert!(tally_net::tls::ensure_dev_certs(dir.path()).unwrap());
    assert!(
        !tally_net::tls::ensure_dev_certs(dir.path()).unwrap(),
        "created once"
    );
    let der = |name: &str| {
        let pem = std::fs::read(dir.path().join("certs").join(name)).unwrap();
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap()
    };
    use tally_net::tls::{role_of_der, Role};
    assert_eq!(role_of_der(&der("client.pem")), Role::Writer);
    assert_eq!(role_of_der(&der("reader.pem")), Role::ReadOnly);
    assert_eq!(role_of_der(b"not a certificate"), Role::ReadOnly);
    for f in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "reader.pem",
        "reader.key",
    ] {
        assert!(dir.path().join("certs").join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("certs/client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "private keys are not readable by others");
}
