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
use tally_net::protocol::{decode_request, decode_response, encode_request, encode_response};

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
                    .map(|(id, a, b, amt)| {
                        // Both forms of a transfer: the fixed 96 bytes and the general entry.
                        if id % 2 == 0 {
                            Command::from(tally_engine::Transfer::new(id, a, b, amt, usd()))
                        } else {
                            Command::from(Entry::transfer(id, a, b, amt, usd()))
                        }
                    })
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
        proptest::collection::vec(command(), 0..12).prop_map(Request::Submit),
        any::<u128>().prop_map(Request::Lien),
        any::<u128>().prop_map(Request::Event),
        "[A-Z0-9]{1,8}".prop_map(|c| Request::Currency(CurrencyCode::parse(&c).unwrap())),
        (
            any::<u128>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(v, from_ts, to_ts, limit, entry)| Request::Find {
                key: if entry {
                    FindKey::EntryUserData(v)
                } else {
                    FindKey::AccountUserData(v)
                },
                from_ts,
                to_ts,
                limit,
            }),
        any::<bool>().prop_map(|full| Request::Verify { full }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(window_s, top)| Request::Hotspots { window_s, top }),
        (proptest::option::of(0u8..7), any::<u64>(), any::<u32>()).prop_map(
            |(state, older_than_s, limit)| Request::Events {
                state,
                older_than_s,
                limit
            }
        ),
        Just(Request::Backup),
        any::<u64>().prop_map(|backup| Request::BackupEnd { backup }),
        any::<(u64, u32, u64, u32)>().prop_map(|(backup, file, offset, len)| {
            Request::BackupRead {
                backup,
                file,
                offset,
                len,
            }
        }),
    ]
}

fn code() -> impl Strategy<Value = CurrencyCode> {
    "[A-Z0-9]{1,8}".prop_map(|c| CurrencyCode::parse(&c).unwrap())
}

fn line() -> impl Strategy<Value = tally_engine::entry::Line> {
    use tally_engine::entry::{Condition, Line, Side};
    (
        any::<u128>(),
        any::<bool>(),
        any::<u128>(),
        code(),
        proptest::option::of(any::<u64>()),
        proptest::option::of((any::<bool>(), any::<i128>())),
    )
        .prop_map(
            |(account, debit, amount, currency, expected_version, cond)| Line {
                account,
                side: if debit { Side::Debit } else { Side::Credit },
                amount,
                currency,
                expected_version,
                condition: cond.map(|(a, v)| {
                    if a {
                        Condition::AvailableAtLeast(v)
                    } else {
                        Condition::BalanceAtMost(v)
                    }
                }),
            },
        )
}

fn operation() -> impl Strategy<Value = tally_engine::chain::Operation> {
    use tally_engine::chain::Operation;
    use tally_engine::lien::{CaptureLien, CreateLien, ReleaseLien};
    prop_oneof![
        // A transfer in both forms: the fixed 96 bytes and the general entry.
        (
            any::<u128>(),
            1u128..9,
            1u128..9,
            any::<u128>(),
            code(),
            any::<u128>(),
            any::<bool>()
        )
            .prop_map(|(id, a, b, amt, c, user_data, fixed)| {
                let t = tally_engine::Transfer::new(id, a, b, amt, c).with_user_data(user_data);
                if fixed {
                    Operation::Transfer(t)
                } else {
                    Operation::Entry(Box::new(t.to_entry()))
                }
            }),
        (
            any::<u128>(),
            proptest::collection::vec(line(), 0..5),
            proptest::option::of(".{0,30}"),
            any::<u128>(),
            proptest::option::of(any::<u128>()),
            any::<bool>()
        )
            .prop_map(|(id, lines, reference, user_data, corrects, allow)| {
                Operation::Entry(Box::new(Entry {
                    id,
                    lines: lines.into_iter().collect(),
                    reference: reference.map(Into::into),
                    user_data,
                    corrects,
                    allow_repeat_correction: allow,
                }))
            }),
        (
            any::<[u128; 5]>(),
            code(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(v, currency, expires_in_ns)| Operation::CreateLien(CreateLien {
                    id: v[0],
                    account: v[1],
                    currency,
                    amount: v[2],
                    expires_in_ns,
                    owner: v[3],
                    user_data: v[4],
                })
            ),
        (
            any::<[u128; 3]>(),
            code(),
            proptest::collection::vec(any::<(u128, u128)>(), 0..4),
            proptest::option::of(".{0,20}")
        )
            .prop_map(|(v, currency, credits, reference)| {
                Operation::CaptureLien(Box::new(CaptureLien {
                    lien: v[0],
                    account: v[1],
                    entry_id: v[2],
                    currency,
                    credits: credits.into_iter().collect(),
                    reference: reference.map(Into::into),
                }))
            }),
        any::<(u128, u128)>()
            .prop_map(|(lien, account)| Operation::ReleaseLien(ReleaseLien { lien, account })),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    use tally_engine::account::{AccountState, BalancePolicy, NewAccount};
    use tally_engine::currency::Currency;
    use tally_engine::event::{EventCommand, NewEvent, Step};
    prop_oneof![
        operation().prop_map(Command::Op),
        operation().prop_map(Command::Op),
        (code(), any::<u8>())
            .prop_map(|(code, scale)| Command::CreateCurrency(Currency { code, scale })),
        (any::<u128>(), code(), 0u8..3, any::<u128>(), any::<u128>()).prop_map(
            |(id, currency, p, limit, user_data)| Command::CreateAccount(NewAccount {
                id,
                currency,
                policy: match p {
                    0 => BalancePolicy::NoOverdraft,
                    1 => BalancePolicy::OverdraftLimit(limit),
                    _ => BalancePolicy::Unrestricted,
                },
                user_data,
            })
        ),
        (any::<u128>(), 0u8..3).prop_map(|(account, s)| Command::SetAccountState {
            account,
            state: [
                AccountState::Active,
                AccountState::Frozen,
                AccountState::Closed
            ][s as usize],
        }),
        (any::<u128>(), proptest::collection::vec(operation(), 0..4))
            .prop_map(|(id, ops)| Command::Chain(tally_engine::chain::Chain { id, ops })),
        Just(Command::Tick),
        (
            any::<u128>(),
            ".{0,10}",
            proptest::option::of(any::<u64>()),
            any::<u8>(),
            any::<u64>()
        )
            .prop_map(|(id, name, timeout_ns, retries, retry_delay_ns)| {
                Command::Event(EventCommand::Create(NewEvent {
                    id,
                    name: name.as_str().into(),
                    description: "d".into(),
                    timeout_ns,
                    metadata: "{}".into(),
                    retries,
                    retry_delay_ns,
                }))
            }),
        (any::<u128>(), ".{0,10}", any::<u32>()).prop_map(|(event, name, order)| {
            Command::Event(EventCommand::AddStep {
                event,
                step: Step {
                    name: name.as_str().into(),
                    description: "".into(),
                    kind: "wallet.transfer".into(),
                    order,
                    payload: "{\"amount\": \"1.00\"}".into(),
                },
            })
        }),
        any::<u128>().prop_map(|event| Command::Event(EventCommand::Start { event })),
        (any::<u128>(), proptest::option::of(any::<u128>())).prop_map(|(event, amount)| {
            Command::Event(EventCommand::Confirm {
                event,
                step: "s".into(),
                amount,
            })
        }),
        any::<u128>().prop_map(|event| Command::Event(EventCommand::Fail {
            event,
            step: "s".into(),
            reason: "no".into(),
        })),
    ]
}

/// Outcomes as one batch gets them: the sequenced ones at consecutive
/// sequence numbers and timestamps.
fn batch_outcomes() -> impl Strategy<Value = Vec<tally_engine::Outcome>> {
    use tally_engine::{Error, ErrorCode, Outcome};
    (
        1u64..1_000_000,
        1u64..u64::MAX / 2,
        proptest::collection::vec(0u8..5, 0..200),
    )
        .prop_map(|(seq0, ts0, kinds)| {
            let mut k = 0;
            kinds
                .into_iter()
                .map(|kind| {
                    let (seq, ts) = (seq0 + k, ts0 + k);
                    let o = match kind {
                        0 | 1 => Outcome::Committed { seq, timestamp: ts },
                        2 => Outcome::Duplicate {
                            seq: seq0.saturating_sub(3).max(1),
                            code: (seq % 2 == 0).then_some(ErrorCode::InsufficientFunds),
                        },
                        3 => Outcome::Rejected {
                            seq: Some(seq),
                            error: Error::new(ErrorCode::VersionConflict)
                                .with_line(1)
                                .with_subject(seq as u128)
                                .with_version(seq),
                        },
                        _ => {
                            return Outcome::rejected_early(
                                Error::new(ErrorCode::InvalidAmount).with_text("1.001 ü"),
                            )
                        }
                    };
                    k += 1;
                    o
                })
                .collect()
        })
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
        let mut body = encode_request(&r);
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
        let body = encode_request(&r);
        let mut f = Vec::new();
        frame::encode(KIND_REQUEST, id, &body, &mut f).unwrap();
        f.extend_from_slice(&f.clone());
        let (h, body, used) = frame::split(&f).unwrap().unwrap();
        prop_assert_eq!((h.id, h.kind, used * 2), (id, KIND_REQUEST, f.len()));
        prop_assert_eq!(decode_request(&body).unwrap(), r);
    }

    #[test]
    fn outcomes_round_trip_in_their_sparse_form(outcomes in batch_outcomes()) {
        let sparse = Outcomes::from_outcomes(&outcomes);
        let committed = outcomes.iter().filter(|o| matches!(o, tally_engine::Outcome::Committed { .. })).count();
        prop_assert_eq!(sparse.exceptions.len(), outcomes.len() - committed, "committed ones are not listed");
        let body = encode_response(&Response::Outcomes(sparse));
        let Response::Outcomes(back) = decode_response(&body).unwrap() else {
            panic!("not outcomes")
        };
        prop_assert_eq!(back.expand().unwrap(), outcomes);
    }

    #[test]
    fn corrupted_responses_never_panic(outcomes in batch_outcomes(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut body = encode_response(&Response::Outcomes(Outcomes::from_outcomes(&outcomes)));
        for (at, x) in flips {
            let i = at % body.len();
            body[i] ^= x;
        }
        if let Ok(Response::Outcomes(o)) = decode_response(&body) {
            let _ = o.expand();
        }
    }
}

#[test]
fn committed_outcomes_out_of_the_batch_rule_are_listed_with_their_own_sequence() {
    use tally_engine::Outcome;
    let odd = [
        Outcome::Committed {
            seq: 10,
            timestamp: 100,
        },
        Outcome::Committed {
            seq: 12,
            timestamp: 101,
        },
    ];
    let sparse = Outcomes::from_outcomes(&odd);
    assert_eq!(sparse.exceptions.len(), 1);
    let body = encode_response(&Response::Outcomes(sparse));
    let Response::Outcomes(back) = decode_response(&body).unwrap() else {
        panic!()
    };
    assert_eq!(back.expand().unwrap(), odd);
}

#[test]
fn oversized_and_unknown_frames_are_refused_from_the_header() {
    let mut head = Vec::new();
    head.extend_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_le_bytes());
    head.extend_from_slice(&[frame::VERSION, KIND_REQUEST, 0, 0]);
    head.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(head.len(), FRAME_HEADER_BYTES);
    assert!(matches!(
        frame::split(&head),
        Err(FrameError::TooLarge { .. })
    ));
    head[..4].copy_from_slice(&0u32.to_le_bytes());
    head[5] = 9;
    assert_eq!(frame::split(&head).err(), Some(FrameError::BadKind(9)));
    head[5] = KIND_RESPONSE;
    head[4] = 1;
    assert_eq!(
        frame::split(&head).err(),
        Some(FrameError::BadVersion(1)),
        "a version-1 frame is refused by its version"
    );
    head[4] = frame::VERSION;
    head[7] = 1;
    assert_eq!(frame::split(&head).err(), Some(FrameError::BadReserved));
    head[7] = 0;
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

/// PROTOCOL.md is the contract other languages are written from: every
/// error code the server can send is in its table, with its stable name.
#[test]
fn protocol_md_lists_every_error_code() {
    let doc = include_str!("../PROTOCOL.md");
    for n in 0..=u16::MAX {
        if let Some(code) = tally_engine::ErrorCode::from_u16(n) {
            let row = format!("| {n} | `{}` |", code.as_str());
            assert!(doc.contains(&row), "PROTOCOL.md lacks {row}");
        }
    }
}

proptest! {
    /// A backup's manifest and chunks round-trip, and every cut of their
    /// bytes is refused rather than misread.
    #[test]
    fn backup_responses_round_trip_and_cuts_are_refused(
        backup in any::<u64>(),
        seqs in any::<(u64, u64)>(),
        files in proptest::collection::vec(("[a-z0-9.-]{1,30}", any::<u64>(), any::<u64>()), 0..5),
        chunk in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        use tally_net::message::{BackupFileInfo, BackupManifest};
        let manifest = Response::Backup(BackupManifest {
            backup,
            durable_seq: seqs.0,
            snapshot_seq: seqs.1,
            files: files
                .into_iter()
                .map(|(name, size, copy)| BackupFileInfo { name, size, copy })
                .collect(),
        });
        for r in [manifest, Response::BackupChunk(chunk)] {
            let body = encode_response(&r);
            prop_assert_eq!(decode_response(&body).unwrap(), r.clone());
            for cut in 0..body.len() {
                prop_assert!(decode_response(&body[..cut]).is_err());
            }
        }
    }
}
