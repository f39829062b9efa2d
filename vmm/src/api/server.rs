//! Serving the API socket so that no client can hold up another: each
//! connection is served on its own short-lived thread, at most
//! [`ApiLimits::max_connections`] at once (the rest are answered 503 at
//! once), and each has one deadline for its whole request and one for its
//! whole answer, so a client that sends nothing, one byte a second or half
//! a body is dropped when its deadline passes.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memtide_api::connect::Deadline;

use super::http::{self, HttpError, Response};
use super::routes::{self, ApiState};

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Time for the whole request (line, headers and body) from accept.
    pub request_deadline: Duration,
    /// Time for the whole answer.
    pub write_deadline: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
}

impl Default for ApiLimits {
    /// 3 s to send a request, 3 s to take the answer, 16 connections.
    fn default() -> Self {
        Self {
            request_deadline: Duration::from_secs(3),
            write_deadline: Duration::from_secs(3),
            max_connections: 16,
        }
    }
}

/// One of at most `max` connection slots; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a slot from `active` if fewer than `max` are taken.
    pub fn try_take(active: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(active.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a request that could not be read.
pub fn refusal(e: &HttpError, limits: &ApiLimits) -> Response {
    match e {
        HttpError::TooLarge => Response::error(413, "body too large"),
        HttpError::TimedOut => Response::error(
            408,
            &format!(
                "the request was not complete within {:?}",
                limits.request_deadline
            ),
        ),
        e => Response::error(400, &e.to_string()),
    }
}

/// Reads one request from `stream`, answers it and closes it.
fn serve(stream: &UnixStream, state: &ApiState, limits: &ApiLimits) {
    let response = match http::read_request(Deadline::new(stream, limits.request_deadline)) {
        Ok(req) => routes::handle(state, &req),
        Err(e) => {
            log::debug!("api: unreadable request: {e}");
            refusal(&e, limits)
        }
    };
    if let Err(e) = http::write_response(Deadline::new(stream, limits.write_deadline), &response) {
        log::debug!("api: cannot answer: {e}");
    }
}

/// Answers 503 without reading the request (the answer is small enough for
/// the socket buffer; the deadline only guards against the unexpected).
fn busy(stream: &UnixStream, limits: &ApiLimits) {
    let r = Response::error(
        503,
        &format!(
            "too many API connections (at most {})",
            limits.max_connections
        ),
    );
    let _ = http::write_response(Deadline::new(stream, Duration::from_millis(100)), &r);
}

/// Accepts connections forever, serving each on its own thread.
pub fn accept_loop(listener: UnixListener, state: Arc<ApiState>, limits: ApiLimits) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                memtide_log_limit::warn_limited!("api: accept: {e}");
                // EMFILE and the like: let the open connections finish.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(slot) = Slot::try_take(&active, limits.max_connections) else {
            memtide_log_limit::warn_limited!(
                "api: {} connections open; refusing another",
                limits.max_connections
            );
            busy(&stream, &limits);
            continue;
        };
        let state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve(&stream, &state, &limits);
            });
        if let Err(e) = spawned {
            // The closure (stream and slot) is dropped: the client sees EOF.
            memtide_log_limit::warn_limited!("api: cannot start a connection thread: {e}");
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
