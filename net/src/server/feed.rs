//! Subscriptions: the durable records of the log, pushed in order.

use super::*;

/// A subscription: every sequenced record from `from_seq`, in order, in
/// frames of up to `MAX_FEED_RECORDS`, as they become durable; ends when the
/// client closes the stream or the server stops.
/// `_slot` is one of the connection's [`MAX_FEEDS_PER_CONNECTION`]; a feed
/// waits for the history to move rather than polling it.
pub(super) async fn feed(
    state: Arc<State>,
    mut send: quinn::SendStream,
    id: u64,
    from_seq: u64,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let mut moved = state.history_seq.subscribe();
    let first = state.history.first_seq();
    if from_seq < first {
        let why = format!("the history starts at sequence {first}");
        end_with_error(&mut send, id, ErrorCode::HistoryUnavailable, why).await;
        return;
    }
    let mut next = from_seq.max(1);
    loop {
        if state.stopping.load(Ordering::Acquire) {
            break;
        }
        let h = state.history.clone();
        let got = tokio::task::spawn_blocking(move || h.records(next, MAX_FEED_RECORDS)).await;
        let records = match got {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => {
                let why = format!("reading the log: {p}");
                end_with_error(&mut send, id, ErrorCode::Unavailable, why).await;
                return;
            }
            Err(_) => break,
        };
        let Some(last) = records.last() else {
            tokio::select! {
                _ = moved.changed() => {}
                // Looks at `stopping` now and then.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = send.stopped() => return,
            }
            continue;
        };
        next = last.header.seq + 1;
        let response = Response::Records(records.iter().map(wire_record).collect());
        if send
            .write_all(&response_frame(id, &response))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = send.finish();
}
