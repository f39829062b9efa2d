//! The query listener: a guest vsock port that answers every connection
//! with the latest report frame and closes it, so a host client can pull
//! a report (host -> guest) as well as receive the pushed ones.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::failures::FailureLog;
use crate::vsock::VsockListener;

/// The latest encoded report frame, shared by the sending loop and the
/// listener (`None` until the first report).
pub type Latest = Arc<Mutex<Option<Vec<u8>>>>;

/// Time allowed to send one answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait before retrying a failed bind or accept.
const RETRY: Duration = Duration::from_secs(1);

/// Replaces the latest frame.
pub fn set_latest(latest: &Latest, frame: Vec<u8>) {
    let mut guard = latest.lock().unwrap_or_else(|e| e.into_inner());
    *guard = Some(frame);
}

/// Starts the listener on `port` in its own thread; it runs for the life
/// of the process and logs its failures through its own rate-limited log.
pub fn spawn(port: u32, latest: Latest, log_period: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("query".into())
        .spawn(move || serve(port, &latest, &mut FailureLog::new(log_period)))
        .map(drop)
}

/// Binds (retrying until it works), then answers connections forever.
fn serve(port: u32, latest: &Latest, log: &mut FailureLog) {
    let listener = loop {
        match VsockListener::bind(port) {
            Ok(l) => break l,
            Err(e) => {
                if let Some(line) = log.failed("listen", Instant::now(), &e) {
                    crate::err_line!("{line}");
                }
                std::thread::sleep(RETRY);
            }
        }
    };
    loop {
        match listener.accept(SEND_TIMEOUT) {
            Ok(stream) => {
                let frame = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(frame) = frame {
                    if let Err(e) = stream.send_all(&frame) {
                        if let Some(line) = log.failed("answer", Instant::now(), &e) {
                            crate::err_line!("{line}");
                        }
                    }
                }
            }
            Err(e) => {
                if let Some(line) = log.failed("accept", Instant::now(), &e) {
                    crate::err_line!("{line}");
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}
