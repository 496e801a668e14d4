//! What the wire encoding costs: a `Submit` request of 1,000 transfers and
//! its 1,000 outcomes, encoded, and validated + decoded (rkyv with bytecheck),
//! next to a JSON rendering of the same outcomes for scale.

use tally_engine::currency::CurrencyCode;
use tally_engine::{Command, Entry, Outcome};
use tally_net::message::*;

fn main() {
    divan::main();
}

fn request() -> Request {
    let usd = CurrencyCode::parse("USD").unwrap();
    Request::Submit(
        (1..=1_000u128)
            .map(|i| Command::from(Entry::transfer(i, 1_000 + i % 97, 2_000 + i % 89, i, usd)))
            .collect(),
    )
}

fn outcomes() -> Response {
    Response::Outcomes(
        (1..=1_000u64)
            .map(|i| {
                WireOutcome::from(&Outcome::Committed {
                    seq: i,
                    timestamp: i,
                })
            })
            .collect(),
    )
}

#[divan::bench]
fn encode_submit_1000(b: divan::Bencher) {
    let r = request();
    b.bench(|| encode_request(divan::black_box(&r)).unwrap());
}

#[divan::bench]
fn decode_submit_1000(b: divan::Bencher) {
    let bytes = encode_request(&request()).unwrap();
    b.bench(|| decode_request(divan::black_box(&bytes)).unwrap());
}

#[divan::bench]
fn encode_outcomes_1000(b: divan::Bencher) {
    let r = outcomes();
    b.bench(|| encode_response(divan::black_box(&r)).unwrap());
}

#[divan::bench]
fn decode_outcomes_1000(b: divan::Bencher) {
    let bytes = encode_response(&outcomes()).unwrap();
    b.bench(|| decode_response(divan::black_box(&bytes)).unwrap());
}

#[divan::bench]
fn json_outcomes_1000(b: divan::Bencher) {
    let Response::Outcomes(o) = outcomes() else {
        unreachable!()
    };
    let outs: Vec<Outcome> = o.iter().map(|w| w.to_outcome().unwrap()).collect();
    b.bench(|| {
        let v: Vec<serde_json::Value> = outs
            .iter()
            .enumerate()
            .map(|(i, o)| tally_net::json::outcome(i as u128 + 1, o))
            .collect();
        serde_json::to_vec(&v).unwrap()
    });
}
