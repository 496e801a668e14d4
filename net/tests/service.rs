//! The service without a transport (quinn's `Pair` idea): requests as the
//! bytes PROTOCOL.md defines, answered by `Service`/`Session` in process,
//! with no binary, certificate or port.

use tally_engine::account::{BalancePolicy, NewAccount};
use tally_engine::currency::{Currency, CurrencyCode};
use tally_engine::{Command, Entry, ErrorCode, Operation, Outcome};
use tally_net::message::*;
use tally_net::protocol::{decode_response, encode_request};
use tally_net::server::{ServerConfig, Service, Session};
use tally_net::tls::Role;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        metrics: None,
        snapshot_every: None,
        ..ServerConfig::default()
    }
}

fn usd() -> CurrencyCode {
    CurrencyCode::parse("USD").unwrap()
}

async fn ask(s: &Session, r: &Request) -> Response {
    decode_response(&s.handle_bytes(&encode_request(r)).await).unwrap()
}

async fn submit(s: &Session, commands: Vec<Command>) -> Vec<Outcome> {
    match ask(s, &Request::Submit(commands)).await {
        Response::Outcomes(o) => o.expand().unwrap(),
        r => panic!("{r:?}"),
    }
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(e) => ErrorCode::from_u16(e.code),
        _ => None,
    }
}

/// USD, an unrestricted account 1 and a no-overdraft account 2.
fn setup() -> Vec<Command> {
    vec![
        Command::CreateCurrency(Currency {
            code: usd(),
            scale: 2,
        }),
        Command::CreateAccount(NewAccount {
            id: 1,
            currency: usd(),
            policy: BalancePolicy::Unrestricted,
            user_data: 0,
        }),
        Command::CreateAccount(NewAccount {
            id: 2,
            currency: usd(),
            policy: BalancePolicy::NoOverdraft,
            user_data: 0,
        }),
    ]
}

/// The worked example of PROTOCOL.md (the body after the 16-byte header).
fn worked_example_body() -> Vec<u8> {
    let hex = "01 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00
               64 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
               01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
               02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
               88 13 00 00 00 00 00 00 00 00 00 00 00 00 00 00
               55 53 44 00 00 00 00 00 00 00 00 00 00 00 00 00
               00 00 00 00 00 00 00 00";
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_answers_protocol_bytes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::open(&config(dir.path())).await.unwrap();
    let writer = service.session(Role::Writer);
    assert!(submit(&writer, setup()).await.iter().all(Outcome::is_ok));

    // The bytes a client written from PROTOCOL.md alone would send.
    let answer = writer.handle_bytes(&worked_example_body()).await;
    let Response::Outcomes(o) = decode_response(&answer).unwrap() else {
        panic!("not outcomes")
    };
    assert_eq!(answer.len(), 32, "all committed: 32 bytes");
    let [Outcome::Committed { seq, .. }] = o.expand().unwrap()[..] else {
        panic!("{o:?}")
    };
    assert_eq!(seq, 4);
    // Sent again: the original outcome, nothing applied.
    let again = submit(
        &writer,
        vec![Entry::transfer(100, 1, 2, 5000, usd()).into()],
    )
    .await;
    assert_eq!(again, vec![Outcome::Duplicate { seq: 4, code: None }]);
    let Response::Account(Some(a)) = ask(&writer, &Request::Account(2)).await else {
        panic!()
    };
    assert_eq!(a.account.balance(), 5000);

    // A batch with a rejection in the middle: the others commit in order.
    let batch = vec![
        Entry::transfer(101, 2, 1, 1000, usd()).into(),
        Entry::transfer(102, 2, 1, 1_000_000, usd()).into(),
        Entry::transfer(103, 2, 1, 1000, usd()).into(),
    ];
    let out = submit(&writer, batch).await;
    assert!(out[0].is_ok() && out[2].is_ok());
    assert_eq!(out[1].code(), Some(ErrorCode::InsufficientFunds));
    assert_eq!(
        out.iter().map(|o| o.seq().unwrap()).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );

    // A read-only session reads but does not write; bad bytes are errors.
    let reader = service.session(Role::ReadOnly);
    assert_eq!(
        code(&decode_response(&reader.handle_bytes(&worked_example_body()).await).unwrap()),
        Some(ErrorCode::PermissionDenied)
    );
    assert!(matches!(
        ask(&reader, &Request::Account(1)).await,
        Response::Account(Some(_))
    ));
    let mut bad = worked_example_body();
    bad[9] = 1; // a reserved byte of the transfer
    let r = decode_response(&writer.handle_bytes(&bad).await).unwrap();
    assert_eq!(code(&r), Some(ErrorCode::MalformedRequest));
    let Response::Error(e) = r else { panic!() };
    assert!(e.message.contains("at byte 9"), "{}", e.message);
    let r = decode_response(&writer.handle_bytes(&[42, 0, 0, 0]).await).unwrap();
    assert_eq!(code(&r), Some(ErrorCode::MalformedRequest));
    service.shutdown().await;

    // Reopened: everything acknowledged is there.
    let service = Service::open(&config(dir.path())).await.unwrap();
    let reader = service.session(Role::ReadOnly);
    let Response::Account(Some(a)) = ask(&reader, &Request::Account(2)).await else {
        panic!()
    };
    assert_eq!(a.account.balance(), 3000);
    let Response::Entry(e) = ask(&reader, &Request::Entry(102)).await else {
        panic!()
    };
    assert_eq!((e.status, e.seq), (STATUS_REJECTED, 7));
    service.shutdown().await;
}

/// A two-line entry in the general ENTRY form (tag 2), which the encoder
/// would write as a TRANSFER (tag 1): 24-byte header, two 72-byte lines.
fn entry_form_body(id: u128, from: u128, to: u128, amount: u128) -> Vec<u8> {
    let mut b = vec![1, 0, 0, 0, 1, 0, 0, 0]; // SUBMIT, one command
    b.extend_from_slice(&[2, 0, 2, 0, 0, 0, 0, 0]); // ENTRY, no flags, 2 lines, no reference
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&0u128.to_le_bytes()); // user data
    b.extend_from_slice(&0u128.to_le_bytes()); // corrects
    for (account, side) in [(from, 0u8), (to, 1u8)] {
        b.extend_from_slice(&account.to_le_bytes());
        b.extend_from_slice(&amount.to_le_bytes());
        b.extend_from_slice(&0i128.to_le_bytes()); // no condition value
        b.extend_from_slice(b"USD\0\0\0\0\0");
        b.extend_from_slice(&0u64.to_le_bytes()); // no expected version
        b.extend_from_slice(&[side, 0, 0, 0, 0, 0, 0, 0]);
    }
    b
}

/// The log stores a submit's commands as the client sent them: the general
/// form of a plain transfer stays the general form (not its 96-byte
/// TRANSFER form), and recovery reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_holds_the_request_bytes_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::open(&config(dir.path())).await.unwrap();
    let writer = service.session(Role::Writer);
    assert!(submit(&writer, setup()).await.iter().all(Outcome::is_ok));
    let body = entry_form_body(77, 1, 2, 1234);
    let sent = &body[8..];
    let decoded = tally_engine::codec::decode_command(sent).unwrap();
    assert_eq!(
        decoded,
        Command::from(Entry::transfer(77, 1, 2, 1234, usd()))
    );
    // The same transfer in its compact form: what a server that
    // re-encoded commands into their smallest form would store.
    let compact = Command::Op(Operation::entry(Entry::transfer(77, 1, 2, 1234, usd())));
    let canonical = tally_engine::codec::encode_command(&compact);
    assert_ne!(canonical, sent, "the test sends the general form");
    let answer = decode_response(&writer.handle_bytes(&body).await).unwrap();
    let Response::Outcomes(o) = answer else {
        panic!("{answer:?}")
    };
    assert!(o.expand().unwrap()[0].is_ok());
    service.shutdown().await;

    let log = std::fs::read(dir.path().join("segment-0000000000.wal")).unwrap();
    let holds = |needle: &[u8]| log.windows(needle.len()).any(|w| w == needle);
    assert!(holds(sent), "the entry's bytes, verbatim");
    assert!(!holds(&canonical), "not re-encoded");
    // Recovery decodes what was stored, and the transfer is there.
    let service = Service::open(&config(dir.path())).await.unwrap();
    let reader = service.session(Role::ReadOnly);
    let Response::Account(Some(a)) = ask(&reader, &Request::Account(2)).await else {
        panic!()
    };
    assert_eq!(a.account.balance(), 1234);
    service.shutdown().await;
}

fn deposit_step(name: &str, payload: &str) -> tally_engine::event::Step {
    tally_engine::event::Step {
        name: name.into(),
        description: "".into(),
        kind: "wallet.deposit".into(),
        order: 0,
        payload: payload.into(),
    }
}

fn rejected_code(o: &Outcome) -> Option<ErrorCode> {
    match o {
        Outcome::Rejected { error, .. } => Some(error.code),
        _ => None,
    }
}

fn step(name: &str, kind: &str, payload: &str) -> tally_engine::event::Step {
    tally_engine::event::Step {
        name: name.into(),
        kind: kind.into(),
        ..deposit_step(name, payload)
    }
}

/// Fail early (issue 17): a step whose executor needs an account the server
/// was not given is refused `not_configured` when it is added, and an event
/// still `created` whose steps were added under another configuration is
/// refused when it starts; neither is logged, and the event stays as it was.
/// A started event is not refused again, and a start whose event had a step
/// refused in the same request is refused with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_server_cannot_run_is_refused_when_added_and_when_started() {
    use tally_engine::event::{EventCommand, NewEvent};
    let ev = Command::Event;
    let dir = tempfile::tempdir().unwrap();
    let mut with_bank = config(dir.path());
    with_bank.events.settlement.insert("USD".into(), 1);
    let service = Service::open(&with_bank).await.unwrap();
    let writer = service.session(Role::Writer);
    assert!(submit(&writer, setup()).await.iter().all(Outcome::is_ok));
    let deposit = r#"{"account_id": "2", "amount": "1.00", "currency": "USD"}"#;
    let out = submit(
        &writer,
        vec![
            ev(EventCommand::Create(NewEvent::new(77, "top-up"))),
            ev(EventCommand::AddStep {
                event: 77,
                step: deposit_step("in", deposit),
            }),
            ev(EventCommand::Create(NewEvent::new(80, "started"))),
            ev(EventCommand::AddStep {
                event: 80,
                step: deposit_step("in", deposit),
            }),
            ev(EventCommand::Start { event: 80 }),
        ],
    )
    .await;
    assert!(out.iter().all(Outcome::is_ok), "{out:?}");
    service.shutdown().await;

    // The same directory, started without a settlement account.
    let service = Service::open(&config(dir.path())).await.unwrap();
    let writer = service.session(Role::Writer);
    let add = ev(EventCommand::AddStep {
        event: 77,
        step: deposit_step("again", deposit),
    });
    let out = submit(&writer, vec![add]).await;
    assert_eq!(
        rejected_code(&out[0]),
        Some(ErrorCode::NotConfigured),
        "{out:?}"
    );
    let out = submit(&writer, vec![ev(EventCommand::Start { event: 77 })]).await;
    let Outcome::Rejected { error, seq } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (error.code, *seq),
        (ErrorCode::NotConfigured, None),
        "refused before sequencing"
    );
    let text = error.message();
    assert!(
        text.contains("\"in\"") && text.contains("settlement"),
        "{text}"
    );
    // (Not compared with `next_seq`: the event driver may still be logging
    // event 80's steps, and the ticker its ticks.)
    // Started before: starting it again is not refused.
    let out = submit(&writer, vec![ev(EventCommand::Start { event: 80 })]).await;
    assert_ne!(
        rejected_code(&out[0]),
        Some(ErrorCode::NotConfigured),
        "{out:?}"
    );
    // A start after a refused step in the same request is refused with it.
    let transfer = r#"{"source_account_id": "1", "destination_account_id": "2", "amount": "1.00", "currency": "USD"}"#;
    let out = submit(
        &writer,
        vec![
            ev(EventCommand::Create(NewEvent::new(81, "half"))),
            ev(EventCommand::AddStep {
                event: 81,
                step: step("pay", "wallet.transfer", transfer),
            }),
            ev(EventCommand::AddStep {
                event: 81,
                step: deposit_step("in", deposit),
            }),
            ev(EventCommand::Start { event: 81 }),
        ],
    )
    .await;
    assert!(out[0].is_ok() && out[1].is_ok(), "{out:?}");
    assert_eq!(
        rejected_code(&out[2]),
        Some(ErrorCode::NotConfigured),
        "{out:?}"
    );
    let Outcome::Rejected { error, seq: None } = &out[3] else {
        panic!("{out:?}")
    };
    assert!(
        error.message().contains("refused in this request"),
        "{}",
        error.message()
    );
    // Naming the account in the payload is enough.
    let named =
        r#"{"account_id": "2", "amount": "1.00", "currency": "USD", "settlement_account_id": "1"}"#;
    let out = submit(
        &writer,
        vec![ev(EventCommand::AddStep {
            event: 77,
            step: deposit_step("named", named),
        })],
    )
    .await;
    assert!(out[0].is_ok(), "{out:?}");
    let Response::Event(Some(e)) = ask(&writer, &Request::Event(77)).await else {
        panic!("event 77 gone")
    };
    assert_eq!(e.event.steps.len(), 2, "in and named, not again");
    assert_eq!(e.event.started_seq, 0, "not started");
    let Response::Event(Some(e)) = ask(&writer, &Request::Event(81)).await else {
        panic!("event 81 gone")
    };
    assert_eq!(e.event.started_seq, 0, "not started");
    service.shutdown().await;
}
