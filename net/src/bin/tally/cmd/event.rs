//! `tally event`: chained transaction events: create, add steps, start,
//! inspect, confirm or fail a step awaiting confirmation, list (stuck) events.

use super::{settle, submit};
use crate::args::{self, EventStateArg};
use crate::output::{Failure, Out, Report};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tally_engine::event::{Action, EventCommand, EventState, NewEvent, Step};
use tally_engine::id::format_id;
use tally_engine::{Command, ErrorCode, Operation, Outcome};
use tally_net::client::Client;
use tally_net::json;
use tally_net::message::WireEvent;

/// How long `--wait` waits for an event to settle.
const WAIT_FOR: Duration = Duration::from_secs(10);

#[derive(Subcommand)]
pub enum EventCmd {
    /// Create an event (its id is its idempotency key).
    Create(CreateArgs),
    /// Add a step (before start). Steps of equal --order form one atomic group.
    Add(AddArgs),
    /// Start an event (starting it again is harmless).
    Start {
        #[arg(value_parser = args::id)]
        event_id: u128,
        /// Wait until it ends or waits for a confirmation, and print it.
        #[arg(long)]
        wait: bool,
    },
    /// An event's state, steps with their results, and liens.
    Get {
        #[arg(value_parser = args::id)]
        event_id: u128,
    },
    /// Confirm a step awaiting confirmation (a withdrawal: capture its lien).
    Confirm {
        #[arg(value_parser = args::id)]
        event_id: u128,
        step: String,
        /// Capture only this much (the rest is released).
        #[arg(long)]
        amount: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Report a step awaiting confirmation as failed: the event compensates.
    Fail {
        #[arg(value_parser = args::id)]
        event_id: u128,
        step: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        wait: bool,
    },
    /// List events, by state; --running-longer-than finds stuck ones.
    List {
        /// Only events in this state.
        #[arg(long, value_enum)]
        state: Option<EventStateArg>,
        /// Only events started at least this long ago and not ended, e.g. 5m.
        #[arg(long, alias = "older-than", value_parser = |t: &str| args::duration("running-longer-than", t))]
        running_longer_than: Option<Duration>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

// No doc comments on these: the variants' are the commands' help.
#[derive(Args)]
pub struct CreateArgs {
    #[arg(value_parser = args::id)]
    event_id: u128,
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "")]
    description: String,
    /// From start to timeout (log time), e.g. 30s, 5m; none by default.
    /// (Given after `create`, this is the event's timeout, not the
    /// client's request timeout.)
    #[arg(long = "timeout", id = "event_timeout", value_parser = |t: &str| args::duration("timeout", t))]
    event_timeout: Option<Duration>,
    /// Retries of a group refused with a retryable error.
    #[arg(long, default_value_t = 0)]
    retries: u8,
    /// Delay before the first retry (doubling after), e.g. 50ms.
    #[arg(long, default_value = "50ms", value_parser = |t: &str| args::duration("retry-delay", t))]
    retry_delay: Duration,
    /// Free JSON metadata.
    #[arg(long, default_value = "{}")]
    metadata: String,
}

#[derive(Args)]
pub struct AddArgs {
    #[arg(value_parser = args::id)]
    event_id: u128,
    #[arg(long)]
    step_name: String,
    /// The executor, e.g. wallet.transfer, wallet.deposit,
    /// wallet.withdrawal, wallet.exchange, batch.operation.
    #[arg(long = "type")]
    kind: String,
    #[arg(long)]
    order: u32,
    /// The step's JSON payload.
    #[arg(long)]
    payload: String,
    #[arg(long, default_value = "")]
    description: String,
}

pub async fn run(client: &Client, cmd: EventCmd) -> Out {
    match cmd {
        EventCmd::Create(a) => create(client, a).await,
        EventCmd::Add(a) => add(client, a).await,
        EventCmd::Start { event_id, wait } => {
            let cmd = Command::Event(EventCommand::Start { event: event_id });
            let r = submit(client, event_id, cmd, "event start of").await?;
            then_wait(client, event_id, wait, r).await
        }
        EventCmd::Get { event_id } => {
            let v = json::event(&event_of(client, event_id).await?);
            let text = event_text(&v);
            Ok(Report::new(v, text))
        }
        EventCmd::Confirm {
            event_id,
            step,
            amount,
            wait,
        } => {
            let amount = match amount {
                None => None,
                Some(a) => Some(confirm_amount(client, event_id, &step, &a).await?),
            };
            let cmd = Command::Event(EventCommand::Confirm {
                event: event_id,
                step: step.into(),
                amount,
            });
            let r = submit(client, event_id, cmd, "confirmation of event").await?;
            then_wait(client, event_id, wait, r).await
        }
        EventCmd::Fail {
            event_id,
            step,
            reason,
            wait,
        } => {
            let cmd = Command::Event(EventCommand::Fail {
                event: event_id,
                step: step.into(),
                reason: reason.into(),
            });
            let r = submit(client, event_id, cmd, "failure report of event").await?;
            then_wait(client, event_id, wait, r).await
        }
        EventCmd::List {
            state,
            running_longer_than,
            limit,
        } => {
            let older = running_longer_than.unwrap_or(Duration::ZERO);
            list(client, state.map(EventState::from), older, limit).await
        }
    }
}

async fn create(client: &Client, a: CreateArgs) -> Out {
    let mut spec = NewEvent::new(a.event_id, &a.name);
    spec.description = a.description.into();
    spec.timeout_ns = a.event_timeout.map(args::nanos);
    spec.retries = a.retries;
    spec.retry_delay_ns = args::nanos(a.retry_delay);
    spec.metadata = a.metadata.into();
    let cmd = Command::Event(EventCommand::Create(spec));
    submit(client, a.event_id, cmd, "event").await
}

async fn add(client: &Client, a: AddArgs) -> Out {
    let event = a.event_id;
    let step = Step {
        name: a.step_name.clone().into(),
        description: a.description.into(),
        kind: a.kind.into(),
        order: a.order,
        payload: a.payload.into(),
    };
    let o = settle(
        client,
        Command::Event(EventCommand::AddStep { event, step }),
    )
    .await?;
    let text = format!(
        "step {} of event {} {} at sequence {}",
        a.step_name,
        format_id(event),
        if matches!(o, Outcome::Duplicate { .. }) {
            "was already added"
        } else {
            "added"
        },
        o.seq().unwrap_or(0)
    );
    Ok(Report::new(json::outcome(event, &o), text))
}

/// `--amount` of `event confirm`, in the currency of the step's lien.
async fn confirm_amount(
    client: &Client,
    event: u128,
    step: &str,
    text: &str,
) -> Result<u128, Failure> {
    let w = event_of(client, event).await?;
    let i = w
        .event
        .step_index(step)
        .ok_or_else(|| Failure::refused(ErrorCode::StepNotFound, format!("{step:?}")))?;
    let lien = w.event.steps.get(i as usize).and_then(|s| {
        s.ops.iter().find_map(|op| match op {
            Operation::CreateLien(c) => Some(c.currency),
            _ => None,
        })
    });
    let code = lien.ok_or_else(|| {
        Failure::refused(
            ErrorCode::InvalidEventState,
            format!("step {step} holds no lien"),
        )
    })?;
    let scale = w
        .currencies
        .iter()
        .find(|c| c.code == code)
        .map_or(0, |c| c.scale);
    args::amount(text, scale)
}

async fn list(client: &Client, state: Option<EventState>, older: Duration, limit: u32) -> Out {
    let list = client.events(state, older, limit).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let items: Vec<Value> = list.iter().map(|e| json::event_summary(e, now)).collect();
    let mut text = format!("{} event(s)", items.len());
    for v in &items {
        let mut line = format!(
            "\n  {} {} {} ({} steps)",
            v["id"].as_str().unwrap_or(""),
            v["name"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or(""),
            v["steps"]
        );
        if let Some(r) = v.get("running_for_s") {
            line.push_str(&format!(", running for {r} s"));
        }
        if let Some(f) = v.get("failure") {
            line.push_str(&format!(", failure {}", f.as_str().unwrap_or("")));
        }
        text.push_str(&line);
    }
    Ok(Report::new(json!({"events": items}), text))
}

/// An event, or `event_not_found`.
async fn event_of(client: &Client, event: u128) -> Result<WireEvent, Failure> {
    client.event(event).await?.ok_or_else(|| {
        Failure::refused(
            ErrorCode::EventNotFound,
            format!("event {}", format_id(event)),
        )
    })
}

/// With `--wait`, the event once settled in place of the submit's report.
async fn then_wait(client: &Client, event: u128, wait: bool, submitted: Report) -> Out {
    if wait {
        wait_event(client, event, WAIT_FOR).await
    } else {
        Ok(submitted)
    }
}

/// Waits (up to `timeout`) until the event ended or waits for a client,
/// then shows it.
async fn wait_event(client: &Client, event: u128, timeout: Duration) -> Out {
    let until = Instant::now() + timeout;
    loop {
        let w = event_of(client, event).await?;
        let e = &w.event;
        let settled = e.state.is_terminal()
            || (e.state == EventState::Running
                && matches!(e.next_action(w.now), Action::Wait { .. }));
        if settled || Instant::now() >= until {
            let v = json::event(&w);
            let text = event_text(&v);
            return Ok(Report::new(v, text));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Text for `event get` (and `--wait`).
fn event_text(v: &Value) -> String {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let mut t = format!(
        "event {} ({}): {}",
        s(&v["id"]),
        s(&v["name"]),
        s(&v["state"])
    );
    if let Some(f) = v.get("failure") {
        t.push_str(&format!(
            "\n  failure: {}: {}",
            s(&f["code"]),
            s(&f["message"])
        ));
    }
    if let Some(f) = v.get("compensation_error") {
        t.push_str(&format!(
            "\n  compensation failed: {}: {} (needs an operator)",
            s(&f["code"]),
            s(&f["message"])
        ));
    }
    for step in v["steps"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "\n  step {} [{}, order {}]: {}",
            s(&step["name"]),
            s(&step["type"]),
            step["order"],
            s(&step["status"])
        ));
        if !step["result"].is_null() {
            t.push_str(&format!("\n    result: {}", step["result"]));
        }
        if let Some(e) = step.get("error") {
            t.push_str(&format!(
                "\n    error: {}: {}",
                s(&e["code"]),
                s(&e["message"])
            ));
        }
    }
    for l in v["liens"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "\n  lien {} on account {}: {} {} {}",
            s(&l["id"]),
            s(&l["account"]),
            s(&l["amount"]),
            s(&l["currency"]),
            s(&l["status"])
        ));
    }
    t
}
