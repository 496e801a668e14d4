//! `batch.operation {batch_id, description?, transactions: [{id, type,
//! payload}]}`: many sub-operations of mixed (non-waiting) types applied as
//! one atomic chain, with a result per item.
//!
//! Progress: the items are applied all at once (atomically), so `event get`
//! shows the step `pending` with `0/N` items, then `applied` with `N/N`; if
//! the chain is refused, the failure names the item that failed
//! (`item K (id ...)`). There is no visible half-done state, by design.

use super::executor::{Executor, Plan, StepContext};
use super::payload::{payload_error, Fields};
use crate::error::Error;
use crate::limits::MAX_BATCH_ITEMS;
use serde_json::{json, Value};

pub struct BatchOperation;

const KIND: &str = "batch.operation";
const FIELDS: &[&str] = &["batch_id", "description", "transactions"];
const ITEM_FIELDS: &[&str] = &["id", "type", "payload"];

/// Item types a batch may not contain: they wait for confirmation, or nest.
fn allowed(kind: &str) -> bool {
    kind != KIND && kind != "wallet.withdrawal"
}

struct Item<'a> {
    id: String,
    kind: &'a str,
    payload: &'a Value,
}

fn items<'a>(f: &Fields<'a>) -> Result<Vec<Item<'a>>, Error> {
    let list = f.array("transactions")?;
    if list.is_empty() {
        return Err(f.error("transactions", "is empty"));
    }
    if list.len() > MAX_BATCH_ITEMS {
        return Err(f.error(
            "transactions",
            &format!("{} items, at most {MAX_BATCH_ITEMS}", list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut seen = std::collections::HashSet::new();
    for (k, v) in list.iter().enumerate() {
        let what = format!("{KIND} item {k}");
        let item = Fields::of(&what, v, ITEM_FIELDS)?;
        let id = match item.raw("id") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(item.error("id", "must be a non-empty string of at most 64 bytes")),
        };
        if !seen.insert(id.clone()) {
            return Err(item.error("id", &format!("{id:?} appears twice")));
        }
        let kind = match v.get("type") {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(item.error("type", "must be a string")),
        };
        if !allowed(kind) {
            return Err(item.error("type", &format!("{kind} cannot be part of a batch")));
        }
        let payload = v
            .get("payload")
            .ok_or_else(|| item.error("payload", "is required"))?;
        out.push(Item { id, kind, payload });
    }
    Ok(out)
}

/// Runs `check` on each item whose type is a built-in, naming the item in
/// its error. Item types are checked against the server's registry when
/// executed; before that, only the built-ins can be checked without one.
fn builtin_items(
    f: &Fields<'_>,
    check: impl Fn(&dyn Executor, &Value) -> Result<(), Error>,
) -> Result<(), Error> {
    let builtins = super::executor::Registry::with_builtins();
    for (k, item) in items(f)?.into_iter().enumerate() {
        if let Some(exec) = builtins.get(item.kind) {
            check(exec.as_ref(), item.payload).map_err(|e| item_error(k, &item.id, e))?;
        }
    }
    Ok(())
}

impl Executor for BatchOperation {
    fn validate(&self, payload: &Value) -> Result<(), Error> {
        let f = Fields::of(KIND, payload, FIELDS)?;
        f.text("batch_id")?
            .ok_or_else(|| f.error("batch_id", "is required"))?;
        f.text("description")?;
        builtin_items(&f, |exec, payload| exec.validate(payload))
    }

    fn configured(
        &self,
        payload: &Value,
        config: &super::executor::EventConfig,
    ) -> Result<(), Error> {
        let f = Fields::of(KIND, payload, FIELDS)?;
        builtin_items(&f, |exec, payload| exec.configured(payload, config))
    }

    fn execute(&self, cx: &mut StepContext<'_>, payload: &Value) -> Result<Plan, Error> {
        let f = Fields::of(KIND, payload, FIELDS)?;
        let batch_id = f
            .text("batch_id")?
            .ok_or_else(|| f.error("batch_id", "is required"))?;
        let items = items(&f)?;
        let registry = cx.registry;
        let mut ops = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            let exec = registry
                .executor(item.kind)
                .map_err(|e| item_error(k, &item.id, e))?;
            cx.scope = k as u32 + 1;
            let plan = exec
                .execute(cx, item.payload)
                .map_err(|e| item_error(k, &item.id, e))?;
            if plan.awaiting {
                return Err(item_error(
                    k,
                    &item.id,
                    payload_error(item.kind, "waits for confirmation: not allowed in a batch"),
                ));
            }
            results.push(json!({
                "id": item.id,
                "type": item.kind,
                "status": "applied",
                "ops": plan.ops.len(),
                "result": plan.result,
            }));
            ops.extend(plan.ops);
        }
        cx.scope = 0;
        Ok(Plan {
            ops,
            result: json!({
                "batch_id": batch_id,
                "items": items.len(),
                "applied": items.len(),
                "results": results,
            }),
            awaiting: false,
        })
    }
}

fn item_error(k: usize, id: &str, e: Error) -> Error {
    Error::new(e.code).with_text(format!("item {k} (id {id}): {}", e.message()))
}

/// The item that produced operation `op` of a batch step, from its result.
pub fn locate(result: &Value, op: usize) -> Option<String> {
    let mut at = 0usize;
    for (k, r) in result.get("results")?.as_array()?.iter().enumerate() {
        let n = r.get("ops")?.as_u64()? as usize;
        if op < at + n {
            let id = r.get("id")?.as_str()?;
            return Some(format!("item {k} (id {id})"));
        }
        at += n;
    }
    None
}
