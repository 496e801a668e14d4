//! JSON forms of what the server returns, for the CLI and for programs that
//! read its `--json` output. Ids and amounts are strings (`"42"`, a UUID,
//! `"100.50"`) so that nothing loses precision.

use crate::message::*;
use serde_json::{json, Map, Value};
use tally_engine::amount::{format_amount, format_balance};
use tally_engine::chain::Operation;
use tally_engine::currency::CurrencyCode;
use tally_engine::event::{EventCommand, EventState, Fact};
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
        Command::Event(e) => {
            v.insert("kind".into(), json!("event"));
            v.insert("event".into(), json!(format_id(e.event())));
            let (action, detail) = event_action(e);
            v.insert("action".into(), json!(action));
            if let Some(d) = detail {
                v.insert("detail".into(), json!(d));
            }
            let ops: Vec<Value> = match e {
                EventCommand::Record { fact, .. } => fact
                    .ops()
                    .map(|op| Value::Object(operation(op, scale)))
                    .collect(),
                _ => Vec::new(),
            };
            if !ops.is_empty() {
                v.insert("operations".into(), json!(ops));
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
        // A transfer is shown as the entry it means (the same JSON).
        Operation::Entry(_) | Operation::Transfer(_) => {
            let Some(e) = op.as_entry() else {
                return v;
            };
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

/// An event command's name and a short detail, for records and audits.
pub fn event_action(e: &EventCommand) -> (&'static str, Option<String>) {
    match e {
        EventCommand::Create(n) => ("create", Some(n.name.to_string())),
        EventCommand::AddStep { step, .. } => (
            "add_step",
            Some(format!(
                "{} ({}, order {})",
                step.name, step.kind, step.order
            )),
        ),
        EventCommand::Start { .. } => ("start", None),
        EventCommand::Confirm { step, .. } => ("confirm", Some(step.to_string())),
        EventCommand::Fail { step, reason, .. } => ("fail", Some(format!("{step}: {reason}"))),
        EventCommand::Record { fact, .. } => match fact {
            Fact::Applied { group, attempt, .. } => {
                ("applied", Some(format!("group {group}, attempt {attempt}")))
            }
            Fact::Refused { group, failure, .. } => (
                "refused",
                Some(format!("group {group}: {}", failure.message)),
            ),
            Fact::Captured { step, .. } => ("captured", Some(format!("step {step}"))),
            Fact::CaptureRefused { step, failure, .. } => (
                "capture_refused",
                Some(format!("step {step}: {}", failure.message)),
            ),
            Fact::Undone { group, .. } => ("undone", Some(format!("group {group}"))),
            Fact::UndoRefused { group, failure, .. } => (
                "undo_refused",
                Some(format!("group {group}: {}", failure.message)),
            ),
            Fact::TimedOut => ("timed_out", None),
            Fact::Finished { .. } => ("finished", None),
            Fact::Concluded => ("concluded", None),
        },
    }
}

fn failure(f: &tally_engine::event::Failure) -> Value {
    let code = ErrorCode::from_u16(f.code).map_or("unknown", |c| c.as_str());
    json!({"code": code, "message": &*f.message, "retryable": f.retryable, "step": f.step})
}

fn json_text(t: &str) -> Value {
    serde_json::from_str(t).unwrap_or_else(|_| json!(t))
}

/// An event as `tally event get --json` prints it.
pub fn event(w: &WireEvent) -> Value {
    let e = &w.event;
    let scales: std::collections::HashMap<CurrencyCode, u8> =
        w.currencies.iter().map(|c| (c.code, c.scale)).collect();
    let mut scale = |c: CurrencyCode| scales.get(&c).copied().unwrap_or(0);
    let steps: Vec<Value> = e
        .steps
        .iter()
        .map(|s| {
            let mut v = json!({
                "name": &*s.step.name,
                "description": &*s.step.description,
                "type": &*s.step.kind,
                "order": s.step.order,
                "status": s.status.name(),
                "payload": json_text(&s.step.payload),
                "result": json_text(&s.result),
                "operations": s.ops.iter().map(|op| Value::Object(operation(op, &mut scale))).collect::<Vec<_>>(),
            });
            if !s.undo.is_empty() {
                v["compensation"] = json!(s
                    .undo
                    .iter()
                    .map(|op| Value::Object(operation(op, &mut scale)))
                    .collect::<Vec<_>>());
            }
            if let Some(f) = &s.error {
                v["error"] = failure(f);
            }
            v
        })
        .collect();
    let liens: Vec<Value> = w
        .liens
        .iter()
        .map(|l| {
            lien(&WireLien {
                lien: *l,
                scale: scale(l.currency),
            })
        })
        .collect();
    let mut v = json!({
        "id": format_id(e.id()),
        "name": &*e.spec.name,
        "description": &*e.spec.description,
        "state": e.state.name(),
        "version": e.version,
        "metadata": json_text(&e.spec.metadata),
        "timeout_ns": e.spec.timeout_ns,
        "retries": e.spec.retries,
        "retry_delay_ns": e.spec.retry_delay_ns,
        "attempt": e.attempt,
        "created_sequence": e.created_seq,
        "created_timestamp": e.created_ts,
        "started_timestamp": e.started_ts,
        "ended_timestamp": e.ended_ts,
        "deadline": e.deadline,
        "steps": steps,
        "liens": liens,
    });
    if let Some(f) = &e.failure {
        v["failure"] = failure(f);
    }
    if let Some(f) = &e.compensation_error {
        v["compensation_error"] = failure(f);
    }
    v
}

/// One line of `tally event list --json`.
pub fn event_summary(e: &EventSummary, now: u64) -> Value {
    let state = EventState::ALL
        .into_iter()
        .find(|s| *s as u8 == e.state)
        .map_or("unknown", |s| s.name());
    let mut v = json!({
        "id": format_id(e.id),
        "name": e.name,
        "state": state,
        "steps": e.steps,
        "created_timestamp": e.created_ts,
        "started_timestamp": e.started_ts,
        "ended_timestamp": e.ended_ts,
        "deadline": e.deadline,
    });
    if now != 0 && e.started_ts != 0 && e.ended_ts == 0 {
        v["running_for_s"] = json!(now.saturating_sub(e.started_ts) / 1_000_000_000);
    }
    if let Some(code) = e.failure {
        v["failure"] = json!(ErrorCode::from_u16(code).map_or("unknown", |c| c.as_str()));
    }
    v
}
