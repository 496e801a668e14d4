//! One request stream: frames in, responses out, matched by request id.

use super::*;
use futures_util::stream::{FuturesUnordered, StreamExt};

pub(super) fn response_frame(id: u64, r: &Response) -> Vec<u8> {
    let body = encode_response(r);
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    if frame::encode(KIND_RESPONSE, id, &body, &mut out).is_err() {
        out.clear();
        let r = err(
            ErrorCode::FrameTooLarge,
            "the response is over the frame limit; ask for a smaller page",
        );
        let _ = frame::encode(KIND_RESPONSE, id, &encode_response(&r), &mut out);
    }
    out
}

/// Responses gathered into one write, at most (about).
const WRITE_GATHER_BYTES: usize = 1 << 20;

/// Bytes of the connection's budget held by a request or a response.
pub(super) type Held = Option<tokio::sync::OwnedSemaphorePermit>;

/// Answers request `id` with an error and ends the stream's sending side.
pub(super) async fn end_with_error(
    send: &mut quinn::SendStream,
    id: u64,
    code: ErrorCode,
    why: String,
) {
    let _ = send.write_all(&response_frame(id, &err(code, why))).await;
    let _ = send.finish();
}

/// What reading one request frame gave.
pub(super) enum Read {
    /// A request, with the budget its frame holds until it is answered.
    Request(u64, Request, Option<Encoded>, Held),
    /// An answer to send (the frame was bad but the stream is still usable).
    Reply(Vec<u8>),
    /// An answer to send, after which the stream is unusable.
    Fatal(Vec<u8>),
    End,
}

pub(super) async fn read_request(
    state: &State,
    role: Role,
    budget: &Budget,
    recv: &mut quinn::RecvStream,
) -> Read {
    let framed = async {
        let Some(h) = frame::read_header(recv).await? else {
            return Ok(None);
        };
        // Reserve the declared length first; the body then grows as it
        // arrives, so a header alone costs nothing but its reservation.
        let held = budget.reserve(FRAME_HEADER_BYTES + h.len as usize).await;
        let body = frame::read_body(recv, h.len as usize).await?;
        Ok(Some((h, body, held)))
    };
    let (h, body, held) = match framed.await {
        Ok(Some(f)) => f,
        Ok(None) | Err(FrameError::Io(_)) | Err(FrameError::Truncated) => return Read::End,
        Err(e) => {
            // The stream cannot be resynchronized: say why and stop it.
            state.metrics.frame_errors.inc();
            let code = match e {
                FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                _ => ErrorCode::MalformedRequest,
            };
            let _ = recv.stop(1u32.into());
            return Read::Fatal(response_frame(0, &err(code, e.to_string())));
        }
    };
    if h.kind != KIND_REQUEST {
        state.metrics.frame_errors.inc();
        return Read::Reply(response_frame(
            h.id,
            &err(ErrorCode::MalformedRequest, "expected a request frame"),
        ));
    }
    match service::decode_for(role, &body) {
        Ok(mut d) => {
            // The body stays, as the commands' bytes for the log (its
            // frame's budget is held until the answer, as before).
            let encoded = d.encoded(body);
            let (r, decoded) = (d.request, d.size);
            // The decoded request is held in memory until it is answered:
            // charge what it takes beyond its frame to the budget too.
            let frame = FRAME_HEADER_BYTES + h.len as usize;
            let held = match (held, decoded.checked_sub(frame).filter(|&n| n > 0)) {
                (Some(mut p), Some(extra)) => {
                    if let Some(more) = budget.reserve(extra).await {
                        p.merge(more);
                    }
                    Some(p)
                }
                (held, _) => held,
            };
            Read::Request(h.id, r, encoded, held)
        }
        Err(refused) => {
            if refused.code != ErrorCode::PermissionDenied as u16 {
                state.metrics.frame_errors.inc();
            }
            Read::Reply(response_frame(h.id, &Response::Error(refused)))
        }
    }
}

/// Sends a response frame to the stream's writer, holding its bytes of the
/// connection's response budget until it is written. `reserved` is what was
/// reserved for it before it was built (its bound): the excess goes back now,
/// a shortfall is reserved first.
async fn respond(
    tx: &mpsc::Sender<(Vec<u8>, Held)>,
    replies: &Budget,
    frame: Vec<u8>,
    reserved: Held,
) {
    let have = reserved.as_ref().map_or(0, |p| p.num_permits());
    let held = match reserved {
        Some(mut p) if have >= frame.len() => {
            // Keep what the frame needs; the rest is released with `p`.
            let keep = p.split(frame.len().max(1));
            drop(p);
            keep
        }
        Some(p) => {
            let more = replies.reserve(frame.len() - have).await;
            let mut p = p;
            if let Some(m) = more {
                p.merge(m);
            }
            Some(p)
        }
        None => replies.reserve(frame.len()).await,
    };
    let _ = tx.send((frame, held)).await;
}

/// Reads the next request frame, owning the stream meanwhile (so the read
/// can wait beside the running requests and is never cancelled midway).
/// (`first`: a request read already, given back as it is.)
async fn read_owned(
    state: &State,
    role: Role,
    budget: &Budget,
    mut recv: quinn::RecvStream,
    first: Option<Read>,
) -> (quinn::RecvStream, Read) {
    let read = match first {
        Some(read) => read,
        None => read_request(state, role, budget, &mut recv).await,
    };
    (recv, read)
}

/// Writes the responses sent to it, gathering what is waiting into one
/// write (up to [`WRITE_GATHER_BYTES`]), then ends the stream.
async fn write_responses(mut send: quinn::SendStream, mut rx: mpsc::Receiver<(Vec<u8>, Held)>) {
    let mut buf = Vec::new();
    let mut written = Vec::new();
    while let Some((f, held)) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&f);
        written.push(held);
        while let Ok((more, held)) = rx.try_recv() {
            buf.extend_from_slice(&more);
            written.push(held);
            if buf.len() > WRITE_GATHER_BYTES {
                break;
            }
        }
        if send.write_all(&buf).await.is_err() {
            return;
        }
        // Written: the bytes go back to the connection's budget, and the
        // buffer keeps no more than its usual size.
        written.clear();
        buf.clear();
        buf.shrink_to(WRITE_GATHER_BYTES);
    }
    let _ = send.finish();
}

/// Requests and answers a stream may have in its task at once: requests
/// beyond [`MAX_INFLIGHT_PER_STREAM`] are answered `busy`, and past this
/// many, no more frames are read until some answers are out (so refused
/// frames add at most this many answers waiting to be sent).
const MAX_RUNNING_PER_STREAM: usize = MAX_INFLIGHT_PER_STREAM + 64;

/// Counts a request in `State::in_progress` (what shutdown waits for) for
/// as long as it runs, however its future ends.
struct InProgress<'a>(&'a AtomicUsize);

impl<'a> InProgress<'a> {
    fn start(n: &'a AtomicUsize) -> InProgress<'a> {
        n.fetch_add(1, Ordering::AcqRel);
        InProgress(n)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a stream's task does for one frame read.
enum Job<'a> {
    /// Answer a request (counted in progress from when it was accepted).
    Run {
        id: u64,
        request: Request,
        encoded: Option<Encoded>,
        held: Held,
        counted: InProgress<'a>,
    },
    /// Send an answer already made (an error).
    Send(Vec<u8>),
}

/// What a stream's jobs share.
#[derive(Clone, Copy)]
struct Serving<'a> {
    state: &'a Arc<State>,
    role: Role,
    limits: &'a ConnLimits,
    tx: &'a mpsc::Sender<(Vec<u8>, Held)>,
    replies: &'a Budget,
}

impl<'a> Serving<'a> {
    async fn run(self, job: Job<'a>) {
        let Serving {
            state,
            role,
            limits,
            tx,
            replies,
        } = self;
        let (id, request, encoded, held, _counted) = match job {
            Job::Send(frame) => return respond(tx, replies, frame, None).await,
            Job::Run {
                id,
                request,
                encoded,
                held,
                counted,
            } => (id, request, encoded, held, counted),
        };
        let t = Instant::now();
        let kind = request_kind(&request);
        // The response's bound is reserved before it is built, from a
        // budget of its own: a request holds its frame's bytes while it
        // waits for that, but nothing waits on requests, so the two never
        // wait on each other in a circle.
        let reserved = replies.reserve(response_bound(&request)).await;
        let response = handle(state, role, limits, request, encoded).await;
        drop(held);
        state.metrics.request(kind, t.elapsed().as_secs_f64());
        respond(tx, replies, response_frame(id, &response), reserved).await;
    }
}

/// One stream: read frames, answer each request as it completes. A stream
/// whose first request is `Subscribe` becomes a feed instead.
pub(super) async fn stream(
    state: Arc<State>,
    role: Role,
    limits: Arc<ConnLimits>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let budget = limits.bytes.clone();
    let replies = limits.replies.clone();
    let pending = read_request(&state, role, &budget, &mut recv).await;
    if let Read::Request(id, Request::Subscribe { from_seq }, _, held) = pending {
        drop(held);
        match limits.feeds.clone().try_acquire_owned() {
            Ok(slot) => feed(state, send, id, from_seq, slot).await,
            Err(_) => {
                state.metrics.busy.inc();
                let why =
                    format!("at most {MAX_FEEDS_PER_CONNECTION} subscriptions per connection");
                end_with_error(&mut send, id, ErrorCode::Busy, why).await;
            }
        }
        return;
    }
    let (sender, rx) = mpsc::channel::<(Vec<u8>, Held)>(MAX_INFLIGHT_PER_STREAM);
    let writer = tokio::spawn(write_responses(send, rx));
    // The stream's requests run inside this task, not a task each: the
    // thread that completes a group wakes this task once for all of its
    // requests here, and their responses go to the writer together. Every
    // answer goes out from `running` (never awaited inline, where it could
    // wait for budget that only the running requests give back).
    let mut running = FuturesUnordered::new();
    let mut reading = std::pin::pin!(read_owned(&state, role, &budget, recv, Some(pending)));
    let at = Serving {
        state: &state,
        role,
        limits: &limits,
        tx: &sender,
        replies: &replies,
    };
    loop {
        let (back, read) = tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => continue,
            // Answers waiting to go out bound the reading too: past this
            // many the client's frames wait in QUIC's flow control.
            read = &mut reading, if running.len() < MAX_RUNNING_PER_STREAM => read,
        };
        let job = match read {
            Read::Request(id, request, encoded, held) => {
                let stopping = state.stopping.load(Ordering::Acquire);
                if running.len() >= MAX_INFLIGHT_PER_STREAM || stopping {
                    state.metrics.busy.inc();
                    let code = if stopping {
                        ErrorCode::ShuttingDown
                    } else {
                        ErrorCode::Busy
                    };
                    drop(held);
                    Job::Send(response_frame(id, &err(code, "")))
                } else {
                    Job::Run {
                        id,
                        request,
                        encoded,
                        held,
                        counted: InProgress::start(&state.in_progress),
                    }
                }
            }
            Read::Reply(f) => Job::Send(f),
            Read::Fatal(f) => {
                running.push(at.run(Job::Send(f)));
                break;
            }
            Read::End => break,
        };
        running.push(at.run(job));
        reading.set(read_owned(&state, role, &budget, back, None));
    }
    // The client sent its last request (or the stream broke): answer what
    // is still running, then end the stream.
    while running.next().await.is_some() {}
    drop(running);
    // The last sender gone, the writer ends the stream once it has written.
    drop(sender);
    let _ = writer.await;
}
