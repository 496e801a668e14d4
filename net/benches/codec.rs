//! What the wire encoding (protocol v2) costs: one transfer encoded,
//! decoded + validated, and read in place + validated as the server does; a `Submit` of 1,000 transfers;
//! the answer to 1,000 commands that all committed (built from the
//! runtime's outcomes and encoded), and one with every tenth rejected; a
//! JSON rendering of the same outcomes for scale.

use tally_engine::currency::CurrencyCode;
use tally_engine::{Command, Error, ErrorCode, Outcome, Transfer};
use tally_net::message::*;
use tally_net::protocol::command::{decode_command, put_command};
use tally_net::protocol::{decode_request, decode_response, encode_request, encode_response};

fn main() {
    divan::main();
}

fn transfer(i: u128) -> Command {
    let usd = CurrencyCode::parse("USD").unwrap();
    Command::from(Transfer::new(i, 1_000 + i % 97, 2_000 + i % 89, i, usd))
}

fn request() -> Request {
    Request::Submit((1..=1_000u128).map(transfer).collect())
}

fn committed() -> Vec<Outcome> {
    (1..=1_000u64)
        .map(|i| Outcome::Committed {
            seq: 41 + i,
            timestamp: 1_000_000 + i,
        })
        .collect()
}

fn some_rejected() -> Vec<Outcome> {
    (1..=1_000u64)
        .map(|i| {
            if i % 10 == 0 {
                Outcome::Rejected {
                    seq: Some(41 + i),
                    error: Error::new(ErrorCode::InsufficientFunds).with_subject(7),
                }
            } else {
                Outcome::Committed {
                    seq: 41 + i,
                    timestamp: 1_000_000 + i,
                }
            }
        })
        .collect()
}

#[divan::bench]
fn encode_transfer(b: divan::Bencher) {
    let c = transfer(7);
    let mut out = Vec::with_capacity(128);
    b.bench_local(|| {
        out.clear();
        put_command(&mut out, divan::black_box(&c));
        divan::black_box(out.len())
    });
}

// Many iterations per sample: one decode is close to the timer's precision.
#[divan::bench(sample_size = 1000)]
fn decode_and_validate_transfer(b: divan::Bencher) {
    let mut bytes = Vec::new();
    put_command(&mut bytes, &transfer(7));
    b.bench(|| {
        let c = decode_command(divan::black_box(&bytes)).unwrap();
        c.validate_client().unwrap();
        c
    });
}

/// What the server does per transfer of a Submit: read the 96 bytes in
/// place (tag, reserved zeros, currency code) and run the client-side
/// validation on the 128-byte command they make.
#[divan::bench(sample_size = 1000)]
fn validate_transfer_in_place(b: divan::Bencher) {
    let mut bytes = Vec::new();
    put_command(&mut bytes, &transfer(7));
    b.bench(|| {
        let t = tally_engine::codec::transfer_in_place(divan::black_box(&bytes)).unwrap();
        let c = Command::from(t);
        c.validate_client().unwrap();
        c
    });
}

#[divan::bench]
fn encode_submit_1000(b: divan::Bencher) {
    let r = request();
    b.bench(|| encode_request(divan::black_box(&r)));
}

/// What the server does with a Submit of 1,000 transfers before sequencing
/// it: decode every command and run the client-side validation.
#[divan::bench]
fn decode_and_validate_submit_1000(b: divan::Bencher) {
    let bytes = encode_request(&request());
    b.bench(|| {
        let Request::Submit(commands) = decode_request(divan::black_box(&bytes)).unwrap() else {
            unreachable!()
        };
        for c in &commands {
            c.validate_client().unwrap();
        }
        commands
    });
}

#[divan::bench]
fn decode_submit_1000(b: divan::Bencher) {
    let bytes = encode_request(&request());
    b.bench(|| decode_request(divan::black_box(&bytes)).unwrap());
}

#[divan::bench]
fn encode_outcomes_1000_all_committed(b: divan::Bencher) {
    let o = committed();
    b.bench(|| {
        encode_response(&Response::Outcomes(Outcomes::from_outcomes(
            divan::black_box(&o),
        )))
    });
}

/// What the server does when the batch settled all committed
/// (`Ticket::settle`): the answer from the count and the first position.
#[divan::bench]
fn answer_1000_all_committed_settled(b: divan::Bencher) {
    b.bench(|| {
        let (count, seq, ts) = divan::black_box((1_000usize, 5_000u64, 1_700_000_000_000u64));
        encode_response(&Response::Outcomes(Outcomes::all_committed(count, seq, ts)))
    });
}

#[divan::bench]
fn encode_outcomes_1000_tenth_rejected(b: divan::Bencher) {
    let o = some_rejected();
    b.bench(|| {
        encode_response(&Response::Outcomes(Outcomes::from_outcomes(
            divan::black_box(&o),
        )))
    });
}

#[divan::bench]
fn decode_outcomes_1000_all_committed(b: divan::Bencher) {
    let bytes = encode_response(&Response::Outcomes(Outcomes::from_outcomes(&committed())));
    b.bench(|| {
        let Response::Outcomes(o) = decode_response(divan::black_box(&bytes)).unwrap() else {
            unreachable!()
        };
        o.expand().unwrap()
    });
}

#[divan::bench]
fn json_outcomes_1000(b: divan::Bencher) {
    let outs = committed();
    b.bench(|| {
        let v: Vec<serde_json::Value> = outs
            .iter()
            .enumerate()
            .map(|(i, o)| tally_net::json::outcome(i as u128 + 1, o))
            .collect();
        serde_json::to_vec(&v).unwrap()
    });
}
