//! JSON forms of what the server returns, for the CLI and for programs that
//! read its `--json` output. Ids and amounts are strings (`"42"`, a UUID,
//! `"100.50"`) so that nothing loses precision.

use crate::message::*;
use serde_json::{json, Map, Value};
use tally_engine::amount::{format_amount, format_balance};
use tally_engine::chain::Operation;
use tally_engine::currency::CurrencyCode;
use tally_engine::id::format_id;
use tally_engine::{BalancePolicy, Command, ErrorCode, Outcome, Side};

pub fn error(code: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message } })
}

pub fn account(a: &WireAccount) -> Value {
    let s = a.currency.scale;
    let acc = &a.account;
    let mut v = json!({
        "id": format_id(acc.id),
        "currency": a.currency.code.as_str(),
        "balance": format_balance(acc.balance(), s),
        "available": format_balance(acc.available(), s),
        "reserved": format_amount(acc.reserved, s),
        "debits_posted": format_amount(acc.debits_posted, s),
        "credits_posted": format_amount(acc.credits_posted, s),
        "version": acc.version,
        "policy": acc.policy.name(),
        "state": acc.state.name(),
        "user_data": acc.user_data.to_string(),
        "created_sequence": acc.created_seq,
        "created_timestamp": acc.created_ts,
    });
    if let BalancePolicy::OverdraftLimit(limit) = acc.policy {
        v["overdraft_limit"] = json!(format_amount(limit, s));
    }
    v
}

pub fn lien(l: &WireLien) -> Value {
    let (x, s) = (&l.lien, l.scale);
    json!({
        "id": format_id(x.id),
        "account": format_id(x.account),
        "currency": x.currency.as_str(),
        "amount": format_amount(x.amount, s),
        "captured": format_amount(x.captured, s),
        "status": x.status.name(),
        "owner": format_id(x.owner),
        "created_sequence": x.created_seq,
        "created_timestamp": x.created_ts,
        "deadline": x.deadline,
    })
}

/// An outcome of a submitted operation, with the id it concerned.
pub fn outcome(id: u128, o: &Outcome) -> Value {
    match o {
        Outcome::Committed { seq, timestamp } => {
            json!({ "id": format_id(id), "status": "committed", "sequence": seq, "timestamp": timestamp })
        }
        Outcome::Duplicate { seq, code: None } => {
            json!({ "id": format_id(id), "status": "duplicate", "original_status": "committed", "sequence": seq })
        }
        Outcome::Duplicate { seq, code: Some(c) } => json!({
            "id": format_id(id), "status": "duplicate", "original_status": "rejected",
            "sequence": seq, "code": c.as_str()
        }),
        Outcome::Rejected { seq, error } => {
            let mut v = json!({
                "id": format_id(id), "status": "rejected", "code": error.code.as_str(),
                "message": error.message(), "sequence": seq,
            });
            if let Some(cv) = error.current_version {
                v["current_version"] = json!(cv);
            }
            v
        }
    }
}

fn outcome_name(o: u8) -> &'static str {
    match o {
        COMMITTED => "committed",
        DUPLICATE => "duplicate",
        _ => "rejected",
    }
}

/// A logged record. `scale` gives a currency's scale (for amounts).
pub fn record(r: &WireRecord, scale: &mut dyn FnMut(CurrencyCode) -> u8) -> Value {
    let mut v = Map::new();
    v.insert("sequence".into(), json!(r.seq));
    v.insert("timestamp".into(), json!(r.timestamp));
    v.insert("status".into(), json!(outcome_name(r.outcome)));
    if r.code != 0 {
        let code = ErrorCode::from_u16(r.code).map_or("unknown", |c| c.as_str());
        v.insert("code".into(), json!(code));
    }
    if r.outcome == DUPLICATE {
        v.insert("original_sequence".into(), json!(r.original_seq));
    }
    match &r.command {
        Command::CreateCurrency(c) => {
            v.insert("kind".into(), json!("currency"));
            v.insert("currency".into(), json!(c.code.as_str()));
            v.insert("scale".into(), json!(c.scale));
        }
        Command::CreateAccount(a) => {
            v.insert("kind".into(), json!("account"));
            v.insert("id".into(), json!(format_id(a.id)));
            v.insert("currency".into(), json!(a.currency.as_str()));
            v.insert("policy".into(), json!(a.policy.name()));
            v.insert("user_data".into(), json!(a.user_data.to_string()));
        }
        Command::SetAccountState { account, state } => {
            v.insert("kind".into(), json!("account_state"));
            v.insert("id".into(), json!(format_id(*account)));
            v.insert("state".into(), json!(state.name()));
        }
        Command::Tick => {
            v.insert("kind".into(), json!("tick"));
        }
        Command::Op(op) => {
            for (k, x) in operation(op, scale) {
                v.insert(k, x);
            }
        }
        Command::Chain(c) => {
            v.insert("kind".into(), json!("chain"));
            v.insert("id".into(), json!(format_id(c.id)));
            let ops: Vec<Value> = c
                .ops
                .iter()
                .map(|op| Value::Object(operation(op, scale)))
                .collect();
            v.insert("operations".into(), json!(ops));
        }
    }
    Value::Object(v)
}

fn operation(op: &Operation, scale: &mut dyn FnMut(CurrencyCode) -> u8) -> Map<String, Value> {
    let mut v = Map::new();
    match op {
        Operation::Entry(e) => {
            v.insert("kind".into(), json!("entry"));
            v.insert("id".into(), json!(format_id(e.id)));
            let lines: Vec<Value> = e
                .lines
                .iter()
                .map(|l| {
                    json!({
                        "account": format_id(l.account),
                        "side": match l.side { Side::Debit => "debit", Side::Credit => "credit" },
                        "amount": format_amount(l.amount, scale(l.currency)),
                        "currency": l.currency.as_str(),
                    })
                })
                .collect();
            v.insert("lines".into(), json!(lines));
            if let Some(r) = &e.reference {
                v.insert("reference".into(), json!(r));
            }
            if let Some(c) = e.corrects {
                v.insert("corrects".into(), json!(format_id(c)));
            }
            if e.user_data != 0 {
                v.insert("user_data".into(), json!(e.user_data.to_string()));
            }
        }
        Operation::CreateLien(c) => {
            v.insert("kind".into(), json!("lien_create"));
            v.insert("id".into(), json!(format_id(c.id)));
            v.insert("account".into(), json!(format_id(c.account)));
            v.insert(
                "amount".into(),
                json!(format_amount(c.amount, scale(c.currency))),
            );
            v.insert("currency".into(), json!(c.currency.as_str()));
        }
        Operation::CaptureLien(c) => {
            v.insert("kind".into(), json!("lien_capture"));
            v.insert("id".into(), json!(format_id(c.entry_id)));
            v.insert("lien".into(), json!(format_id(c.lien)));
            v.insert("account".into(), json!(format_id(c.account)));
            let s = scale(c.currency);
            let credits: Vec<Value> = c
                .credits
                .iter()
                .map(|(a, amt)| json!({ "account": format_id(*a), "amount": format_amount(*amt, s) }))
                .collect();
            v.insert("credits".into(), json!(credits));
            v.insert("currency".into(), json!(c.currency.as_str()));
        }
        Operation::ReleaseLien(r) => {
            v.insert("kind".into(), json!("lien_release"));
            v.insert("lien".into(), json!(format_id(r.lien)));
            v.insert("account".into(), json!(format_id(r.account)));
        }
    }
    v
}

pub fn statement_line(
    l: &StatementLine,
    scale: u8,
    mut any_scale: impl FnMut(CurrencyCode) -> u8,
) -> Value {
    let mut v = record(&l.record, &mut any_scale);
    v["debit"] = json!(format_amount(l.debit, scale));
    v["credit"] = json!(format_amount(l.credit, scale));
    v["balance"] = json!(format_balance(l.balance, scale));
    v
}
