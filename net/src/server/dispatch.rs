//! One function per request kind.

use super::*;

/// The accounts each command writes when it commits (for hotspots).
pub(super) fn written_accounts(cmd: &Command) -> smallvec::SmallVec<[u128; 2]> {
    use tally_engine::chain::Operation;
    let mut out = smallvec::SmallVec::new();
    for op in cmd.ops() {
        match op {
            Operation::Entry(e) => out.extend(e.lines.iter().map(|l| l.account)),
            Operation::Transfer(t) => out.extend(t.accounts()),
            Operation::CreateLien(c) => out.push(c.account),
            Operation::CaptureLien(c) => {
                out.push(c.account);
                out.extend(c.credits.iter().map(|(a, _)| *a));
            }
            Operation::ReleaseLien(r) => out.push(r.account),
        }
    }
    if let Command::SetAccountState { account, .. } = cmd {
        out.push(*account);
    }
    out.sort_unstable();
    out.dedup();
    out
}

pub(super) fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::Submit(_) => "submit",
        Request::Account(_) => "account",
        Request::Entry(_) => "entry",
        Request::Lien(_) => "lien",
        Request::Currency(_) => "currency",
        Request::Statement { .. } => "statement",
        Request::Find { .. } => "find",
        Request::Subscribe { .. } => "subscribe",
        Request::Status => "status",
        Request::Verify { .. } => "verify",
        Request::Hotspots { .. } => "hotspots",
        Request::Event(_) => "event",
        Request::Events { .. } => "events",
        Request::Backup => "backup",
        Request::BackupRead { .. } => "backup_read",
        Request::BackupEnd { .. } => "backup_end",
    }
}

pub(super) async fn handle(
    state: &Arc<State>,
    role: Role,
    limits: &ConnLimits,
    request: Request,
    encoded: Option<Encoded>,
) -> Response {
    // Heavy requests run one per connection and a few server-wide; beyond
    // that they are answered `busy` at once (nothing queues behind them, and
    // nothing outlives a closed connection but the one running).
    let _turn = if is_heavy(&request) {
        let mine = limits.heavy.clone().try_acquire_owned();
        let all = state.heavy.clone().try_acquire_owned();
        match (mine, all) {
            (Ok(mine), Ok(all)) => Some((mine, all)),
            _ => {
                state.metrics.busy.inc();
                return err(
                    ErrorCode::Busy,
                    "a verification, event listing or backup snapshot is already running; retry later",
                );
            }
        }
    } else {
        None
    };
    match handle_inner(state, role, request, encoded).await {
        Ok(r) | Err(r) => r,
    }
}

/// The most bytes the response to `r` can take on the wire (its frame),
/// reserved before it is built. Pages are bounded by `MAX_PAGE_BYTES`, an
/// entry's record by the log's record limit; what has no tighter bound
/// (an event with its steps, a verifier report) takes a whole frame.
pub(super) fn response_bound(r: &Request) -> usize {
    const SMALL: usize = 64 << 10;
    const PER_OUTCOME: usize = 512;
    let frame = FRAME_HEADER_BYTES + 64;
    frame
        + match r {
            Request::Submit(c) => SMALL + c.len() * PER_OUTCOME,
            Request::Entry(_) => SMALL + tally_wal::format::MAX_RECORD_BODY + RECORD_WIRE_OVERHEAD,
            Request::Statement { .. } | Request::Find { .. } => SMALL + MAX_PAGE_BYTES,
            Request::Events { .. } => SMALL + MAX_EVENTS_LISTED * 512,
            Request::Event(_) | Request::Verify { .. } | Request::Backup => MAX_FRAME_BYTES,
            Request::BackupRead { .. } => SMALL + MAX_BACKUP_CHUNK_BYTES,
            Request::BackupEnd { .. } => SMALL,
            Request::Account(_)
            | Request::Lien(_)
            | Request::Currency(_)
            | Request::Status
            | Request::Hotspots { .. }
            | Request::Subscribe { .. } => SMALL,
        }
}

/// Requests whose cost grows with the ledger (a scan of every account,
/// event or id) rather than with the request.
fn is_heavy(r: &Request) -> bool {
    matches!(
        r,
        Request::Verify { .. } | Request::Events { .. } | Request::Backup
    )
}

/// A `Submit`: admitted, its event steps checked, sequenced, and answered
/// once durable (the sparse answer: only what did not commit).
async fn on_submit(
    state: &Arc<State>,
    role: Role,
    commands: Vec<Command>,
    encoded: Option<Encoded>,
) -> Result<Response, Response> {
    let received = Instant::now();
    admit(role, &commands).map_err(Response::Error)?;
    if commands.is_empty() {
        return Ok(Response::Outcomes(Outcomes::default()));
    }
    let events = commands.iter().any(|c| matches!(c, Command::Event(_)));
    let mut early = check_early(state, &commands);
    check_starts(state, &commands, &mut early).await?;
    let (commands, encoded) = without_early(commands, encoded, &early);
    if commands.is_empty() {
        let outcomes: Vec<Outcome> = early.into_iter().flatten().collect();
        return Ok(Response::Outcomes(Outcomes::from_outcomes(&outcomes)));
    }
    let written: Vec<_> = commands.iter().map(written_accounts).collect();
    let (settled, stages) = submit_and_wait(state, commands, encoded).await?;
    observe_stages(state, received, stages);
    if events {
        if let Some(d) = state.driver.lock().as_ref() {
            d.poke();
        }
    }
    observe(state, &settled, &written);
    Ok(Response::Outcomes(match settled {
        Settled::AllCommitted {
            count,
            first_seq,
            first_timestamp,
        } if early.is_empty() => Outcomes::all_committed(count, first_seq, first_timestamp),
        settled => Outcomes::from_outcomes(&merge_early(settled.into_outcomes(), early)),
    }))
}

/// What a `Submit` may not hold, whatever its commands' state: refused as a
/// whole, before anything is sequenced.
fn admit(role: Role, commands: &[Command]) -> Result<(), WireError> {
    if role == Role::ReadOnly {
        return Err(WireError::new(ErrorCode::PermissionDenied, ""));
    }
    if commands.len() > MAX_BATCH_OPERATIONS {
        return Err(WireError::new(
            ErrorCode::BatchTooLarge,
            format!("{} > {MAX_BATCH_OPERATIONS}", commands.len()),
        ));
    }
    if commands.iter().any(|c| matches!(c, Command::Tick)) {
        return Err(WireError::new(
            ErrorCode::MalformedRequest,
            "tick is issued by the server, not by clients",
        ));
    }
    if commands
        .iter()
        .any(|c| matches!(c, Command::Event(EventCommand::Record { .. })))
    {
        return Err(WireError::new(
            ErrorCode::MalformedRequest,
            "event records are written by the server's event driver, not by clients",
        ));
    }
    Ok(())
}

/// Outcomes decided before sequencing: steps are checked against the
/// registry before they are logged (an unknown type or a bad payload leaves
/// no trace), and so are ids in the event driver's namespace
/// (`reserved_id`). Empty when there are none.
fn check_early(state: &State, commands: &[Command]) -> Vec<Option<Outcome>> {
    let early: Vec<Option<Outcome>> = commands
        .iter()
        .map(|c| match c {
            Command::Event(EventCommand::AddStep { step, .. }) => state
                .registry
                .validate_configured(step, &state.events)
                .err()
                .map(Outcome::rejected_early),
            c => tally_engine::event::first_reserved_id(c)
                .and_then(|_| c.validate_client().err().map(Outcome::rejected_early)),
        })
        .collect();
    if early.iter().any(Option::is_some) {
        early
    } else {
        Vec::new()
    }
}

/// Fail early at a start. An event still `created` whose steps need an
/// account the server was not given (its configuration may have changed
/// since they were added) is refused `not_configured` before the start is
/// logged; so is a start whose event had a step refused earlier in the same
/// request (it would otherwise run without that step). Events already
/// started are left alone: starting them again is harmless. Reads the events
/// as the shards hold them now, without waiting for the log (the steps that
/// matter were logged under an earlier configuration, so long ago).
/// Fills `early` (all `None` first) only when one is refused.
async fn check_starts(
    state: &Arc<State>,
    commands: &[Command],
    early: &mut Vec<Option<Outcome>>,
) -> Result<(), Response> {
    let mut starts: Vec<(usize, u128)> = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let Command::Event(EventCommand::Start { event }) = c else {
            continue;
        };
        if early.get(i).is_some_and(Option::is_some) {
            continue;
        }
        let refused_step = commands[..i].iter().enumerate().find_map(|(j, c)| match c {
            Command::Event(EventCommand::AddStep { event: e, step }) if e == event => {
                match early.get(j) {
                    Some(Some(Outcome::Rejected { error, .. })) => {
                        Some((step.name.clone(), error.clone()))
                    }
                    _ => None,
                }
            }
            _ => None,
        });
        if let Some((name, error)) = refused_step {
            let text = format!(
                "step {name:?} of this event was refused in this request: {}",
                error.message()
            );
            refuse_at(
                early,
                commands.len(),
                i,
                tally_engine::Error::new(error.code).with_text(text),
            );
            continue;
        }
        starts.push((i, *event));
    }
    if starts.is_empty() {
        return Ok(());
    }
    let ids: Vec<u128> = starts.iter().map(|(_, e)| *e).collect();
    let s = state.clone();
    let steps = tokio::task::spawn_blocking(move || {
        let guard = s.durable.read();
        let d = guard.as_ref()?;
        let rt = d.runtime();
        Some(
            ids.into_iter()
                .map(|id| {
                    let shard = tally_engine::id::shard_of(id, rt.shards());
                    rt.query(shard, move |s| {
                        s.events()
                            .get(id)
                            .filter(|e| e.state == tally_engine::event::EventState::Created)
                            .map(|e| e.steps.iter().map(|s| s.step.clone()).collect::<Vec<_>>())
                    })
                    .flatten()
                    .unwrap_or_default()
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| err(ErrorCode::ShuttingDown, ""))?;
    for ((i, _), steps) in starts.into_iter().zip(steps) {
        let refused = steps
            .iter()
            .find_map(|s| state.registry.step_configured(s, &state.events).err());
        if let Some(e) = refused {
            refuse_at(early, commands.len(), i, e);
        }
    }
    Ok(())
}

/// Marks command `i` of `n` refused before sequencing.
fn refuse_at(early: &mut Vec<Option<Outcome>>, n: usize, i: usize, e: tally_engine::Error) {
    if early.is_empty() {
        early.resize(n, None);
    }
    early[i] = Some(Outcome::rejected_early(e));
}

/// The commands (and their bytes) that go on to be sequenced.
fn without_early(
    commands: Vec<Command>,
    encoded: Option<Encoded>,
    early: &[Option<Outcome>],
) -> (Vec<Command>, Option<Encoded>) {
    if early.is_empty() {
        return (commands, encoded);
    }
    let encoded = encoded.map(|e| e.retain(|i| early[i].is_none()));
    let kept = commands
        .into_iter()
        .zip(early)
        .filter(|(_, e)| e.is_none())
        .map(|(c, _)| c)
        .collect();
    (kept, encoded)
}

/// Sequences the commands and waits, without blocking a thread, until they
/// are executed and durable.
async fn submit_and_wait(
    state: &Arc<State>,
    commands: Vec<Command>,
    encoded: Option<Encoded>,
) -> Result<(Settled, tally_engine::runtime::Stages), Response> {
    let ticket = {
        let guard = state.durable.read();
        let Some(d) = guard.as_ref() else {
            return Err(err(ErrorCode::ShuttingDown, ""));
        };
        match encoded {
            Some(e) => d.runtime().try_submit_encoded(commands, e),
            None => d.runtime().try_submit(commands),
        }
    };
    let ticket = ticket.map_err(|e| {
        if e.code == ErrorCode::Busy {
            state.metrics.busy.inc();
        }
        err(e.code, e.text.as_deref().unwrap_or(""))
    })?;
    // The thread that completes the batch (the log writer) wakes this task
    // directly: no thread sits blocked per request.
    let (reply, wait) = oneshot::channel::<()>();
    ticket.batch().on_done(move || {
        let _ = reply.send(());
    });
    wait.await.map_err(|_| err(ErrorCode::ShuttingDown, ""))?;
    let stages = ticket.batch().stages();
    Ok((ticket.settle(), stages))
}

/// A submit's time in each stage, from the batch's stamps: `received` (the
/// request decoded) to sequenced, to executed, appended, durable, and now.
fn observe_stages(state: &State, received: Instant, s: tally_engine::runtime::Stages) {
    let queue = s.sequenced.saturating_duration_since(received);
    let between = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    let since_seq = Some(Duration::ZERO);
    let respond = s
        .durable
        .map(|d| Instant::now().saturating_duration_since(s.sequenced + d));
    state.metrics.stages([
        Some(queue),
        between(since_seq, s.executed),
        between(s.executed, s.appended),
        between(s.appended, s.durable),
        respond,
    ]);
}

/// Hotspots (writes per account, version conflicts) and the operation
/// counters, counted per kind of outcome rather than per command.
fn observe(state: &State, settled: &Settled, written: &[smallvec::SmallVec<[u128; 2]>]) {
    let now = Instant::now();
    let mut hot = state.hotspots.lock();
    match settled {
        Settled::AllCommitted { count, .. } => {
            for accounts in written {
                hot.write(now, accounts);
            }
            drop(hot);
            state.metrics.operations("committed", *count as u64);
        }
        Settled::Outcomes(outcomes) => {
            let mut by_result: Vec<(&'static str, u64)> = Vec::new();
            for (o, accounts) in outcomes.iter().zip(written) {
                let result = match o {
                    Outcome::Committed { .. } => {
                        hot.write(now, accounts);
                        "committed"
                    }
                    Outcome::Duplicate { .. } => "duplicate",
                    Outcome::Rejected { error, .. } => {
                        if error.code == ErrorCode::VersionConflict {
                            hot.conflict(now, error.subject);
                        }
                        error.code.as_str()
                    }
                };
                match by_result.iter_mut().find(|(r, _)| *r == result) {
                    Some((_, n)) => *n += 1,
                    None => by_result.push((result, 1)),
                }
            }
            drop(hot);
            for (result, n) in by_result {
                state.metrics.operations(result, n);
            }
        }
    }
}

/// The outcomes of the sequenced commands put back among the early ones,
/// in request order.
fn merge_early(outcomes: Vec<Outcome>, early: Vec<Option<Outcome>>) -> Vec<Outcome> {
    if early.is_empty() {
        return outcomes;
    }
    let mut submitted = outcomes.into_iter();
    early
        .into_iter()
        .map(|e| {
            e.or_else(|| submitted.next())
                .unwrap_or_else(|| Outcome::rejected_early(ErrorCode::ShuttingDown.into()))
        })
        .collect()
}

/// Answers one request: one function per request kind.
pub(super) async fn handle_inner(
    state: &Arc<State>,
    role: Role,
    request: Request,
    encoded: Option<Encoded>,
) -> Result<Response, Response> {
    match request {
        Request::Submit(commands) => on_submit(state, role, commands, encoded).await,
        Request::Event(id) => on_event(state, id).await,
        Request::Backup => super::backup::on_backup(state, role).await,
        Request::BackupRead {
            backup,
            file,
            offset,
            len,
        } => super::backup::on_backup_read(state, role, backup, file, offset, len).await,
        Request::BackupEnd { backup } => Ok(super::backup::on_backup_end(state, role, backup)),
        Request::Events {
            state: wanted,
            older_than_s,
            limit,
        } => on_events(state, wanted, older_than_s, limit).await,
        Request::Account(id) => on_account(state, id).await,
        Request::Lien(id) => on_lien(state, id).await,
        Request::Currency(code) => on_currency(state, code).await,
        Request::Entry(id) => on_entry(state, id).await,
        Request::Statement {
            account,
            from_seq,
            limit,
        } => on_statement(state, account, from_seq, limit).await,
        Request::Find {
            key,
            from_ts,
            to_ts,
            limit,
        } => on_find(state, key, from_ts, to_ts, limit).await,
        Request::Verify { full } => Ok(Response::Verification(run_verify(state, full).await?)),
        Request::Hotspots { window_s, top } => Ok(on_hotspots(state, window_s, top)),
        Request::Subscribe { .. } => Err(err(
            ErrorCode::MalformedRequest,
            "subscribe must be the first request on its own stream",
        )),
        Request::Status => on_status(state, role).map_err(Response::Error),
    }
}

/// An event with its liens, as of a durable point.
async fn on_event(state: &Arc<State>, id: u128) -> Result<Response, Response> {
    let found = with_runtime(state, move |rt| {
        let shard = tally_engine::id::shard_of(id, rt.shards());
        let event = rt
            .query(shard, move |s| s.events().get(id).cloned())
            .flatten()?;
        let liens = event
            .liens()
            .into_iter()
            .filter_map(|(l, _)| rt.lien(l))
            .collect();
        let currencies = rt
            .query(0, |s| s.currencies().iter().copied().collect())
            .unwrap_or_default();
        Some(WireEvent {
            event,
            liens,
            currencies,
            now: rt.now(),
        })
    })
    .await?;
    Ok(Response::Event(found))
}

/// Events in a state, or running for longer than `older_than_s`: a cut
/// across the shards, oldest first.
async fn on_events(
    state: &Arc<State>,
    wanted: Option<u8>,
    older_than_s: u64,
    limit: u32,
) -> Result<Response, Response> {
    let limit = (limit as usize).clamp(1, MAX_EVENTS_LISTED);
    let list = with_runtime(state, move |rt| {
        let now = rt.now();
        let older = older_than_s.saturating_mul(1_000_000_000);
        let (_, parts) = rt.cut(move |s| {
            s.events()
                .iter()
                .filter(|e| wanted.is_none_or(|w| e.state as u8 == w))
                .filter(|e| {
                    older == 0
                        || (e.started_ts != 0
                            && !e.state.is_terminal()
                            && now.saturating_sub(e.started_ts) >= older)
                })
                .map(|e| EventSummary {
                    id: e.id(),
                    name: e.spec.name.to_string(),
                    state: e.state as u8,
                    steps: e.steps.len() as u32,
                    created_ts: e.created_ts,
                    started_ts: e.started_ts,
                    ended_ts: e.ended_ts,
                    deadline: e.deadline,
                    failure: e.failure.as_ref().map(|f| f.code),
                })
                .collect::<Vec<_>>()
        });
        let mut all: Vec<EventSummary> = parts.into_iter().flatten().collect();
        all.sort_by_key(|e| (e.created_ts, e.id));
        all.truncate(limit);
        all
    })
    .await?;
    Ok(Response::Events(list))
}

/// An account and its currency.
async fn on_account(state: &Arc<State>, id: u128) -> Result<Response, Response> {
    let view = with_runtime(state, move |rt| rt.account(id)).await?;
    Ok(Response::Account(view.map(|v| WireAccount {
        account: v.account,
        currency: v.currency,
    })))
}

/// A lien, with its account's currency scale.
async fn on_lien(state: &Arc<State>, id: u128) -> Result<Response, Response> {
    let found = with_runtime(state, move |rt| {
        let lien = rt.lien(id)?;
        let scale = rt.account(lien.account).map_or(0, |a| a.currency.scale);
        Some(WireLien { lien, scale })
    })
    .await?;
    Ok(Response::Lien(found))
}

/// A currency by code.
async fn on_currency(
    state: &Arc<State>,
    code: tally_engine::CurrencyCode,
) -> Result<Response, Response> {
    let c = with_runtime(state, move |rt| {
        let (_, found) = rt.cut(move |s| s.currency(code));
        found.into_iter().next().flatten()
    })
    .await?;
    Ok(Response::Currency(c))
}

/// An entry's status by id, with the record that decided it.
async fn on_entry(state: &Arc<State>, id: u128) -> Result<Response, Response> {
    // Looked up in the shard's memory, then in the cold tier.
    let status = with_runtime(state, move |rt| rt.try_status(IdSpace::Entry, id))
        .await?
        .map_err(|e| Response::Error(WireError::new(e.code, e.text.as_deref().unwrap_or(""))))?;
    let (st, seq, code) = match status {
        IdStatus::Committed { seq } => (STATUS_COMMITTED, seq, 0),
        IdStatus::Rejected { seq, code } => (STATUS_REJECTED, seq, code as u16),
        IdStatus::Unknown => (STATUS_UNKNOWN, 0, 0),
    };
    let record = if seq == 0 {
        None
    } else {
        with_history(state, move |h| h.record(seq))
            .await?
            .map(|r| wire_record(&r))
    };
    Ok(Response::Entry(EntryInfo {
        status: st,
        seq,
        code,
        record,
    }))
}

/// A page of an account's statement from the history.
async fn on_statement(
    state: &Arc<State>,
    account: u128,
    from_seq: u64,
    limit: u32,
) -> Result<Response, Response> {
    let view = with_runtime(state, move |rt| rt.account(account)).await?;
    let Some(view) = view else {
        return Err(err(
            ErrorCode::AccountNotFound,
            tally_engine::id::format_id(account),
        ));
    };
    let first = state.history.first_seq();
    if from_seq < first && first > 1 && from_seq > 0 {
        return Err(err(
            ErrorCode::HistoryUnavailable,
            format!("the history starts at sequence {first}"),
        ));
    }
    let (lines, next_from_seq) =
        with_history(state, move |h| h.statement(account, from_seq, limit)).await?;
    Ok(Response::Statement(Statement {
        account,
        currency: Some(view.currency),
        lines: lines.iter().map(statement_line).collect(),
        next_from_seq,
    }))
}

/// Records by reference or user data within a time range.
async fn on_find(
    state: &Arc<State>,
    key: FindKey,
    from_ts: u64,
    to_ts: u64,
    limit: u32,
) -> Result<Response, Response> {
    if let FindKey::Reference(t) = &key {
        if t.len() > MAX_QUERY_REFERENCE_BYTES {
            return Err(err(ErrorCode::ReferenceTooLong, ""));
        }
    }
    let found = with_history(state, move |h| h.find(&key, from_ts, to_ts, limit)).await?;
    Ok(Response::Records(found.iter().map(wire_record).collect()))
}

/// The most written accounts and the most conflicts in a window.
fn on_hotspots(state: &State, window_s: u64, top: u32) -> Response {
    let window = Duration::from_secs(window_s.clamp(1, crate::hotspot::MAX_WINDOW_S));
    let top = top.clamp(1, crate::hotspot::CAPACITY as u32) as usize;
    let (w, c) = state.hotspots.lock().window(Instant::now(), window);
    Response::Hotspots(HotspotReport {
        window_s: window.as_secs(),
        writes: w.top(top),
        conflicts: c.top(top),
        total_writes: w.total,
        total_conflicts: c.total,
    })
}

/// The server's position and the caller's role.
fn on_status(state: &State, role: Role) -> Result<Response, WireError> {
    let (next_seq, durable_seq) = {
        let guard = state.durable.read();
        let Some(d) = guard.as_ref() else {
            return Err(WireError::new(ErrorCode::ShuttingDown, ""));
        };
        (
            d.runtime().next_seq(),
            d.stats.durable_seq.load(Ordering::Acquire),
        )
    };
    Ok(Response::Status(ServerStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        shards: state.shards as u32,
        next_seq,
        durable_seq,
        history_from: state.history.first_seq(),
        read_only: role == Role::ReadOnly,
    }))
}
