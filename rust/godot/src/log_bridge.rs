//! Shows the SDK's `tracing` warnings and errors in Godot's Output panel.
//!
//! SDK threads only append formatted lines to a bounded queue; the per-frame drain prints them on
//! the main thread (see `hub.rs`). Plain Rust, so it is tested without Godot.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

/// Lines kept while no frame drains them; older ones are dropped first.
const CAPACITY: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub is_error: bool,
    pub text: String,
}

#[derive(Default)]
pub struct LogQueue(Mutex<VecDeque<LogLine>>);

impl LogQueue {
    fn push(&self, line: LogLine) {
        let mut lines = self.0.lock().expect("log queue lock");
        if lines.len() == CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn take(&self) -> Vec<LogLine> {
        self.0.lock().expect("log queue lock").drain(..).collect()
    }
}

/// Captures WARN and ERROR events into a [`LogQueue`].
pub struct CaptureLayer(pub Arc<LogQueue>);

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = Fields::default();
        event.record(&mut text);
        self.0.push(LogLine {
            is_error: level == Level::ERROR,
            text: format!("AeThexCloud: {}{}", text.message, text.rest),
        });
    }
}

/// `message` first, then ` key=value` for every other field.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

static QUEUE: LazyLock<Arc<LogQueue>> = LazyLock::new(Arc::default);

/// Routes SDK logs to the queue, unless the process already has a global subscriber.
pub fn install() {
    let _ = tracing_subscriber::registry()
        .with(CaptureLayer(QUEUE.clone()))
        .try_init();
}

/// Lines logged since the last call.
pub fn take() -> Vec<LogLine> {
    QUEUE.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(log: impl FnOnce()) -> Vec<LogLine> {
        let queue = Arc::new(LogQueue::default());
        let subscriber = tracing_subscriber::registry().with(CaptureLayer(queue.clone()));
        tracing::subscriber::with_default(subscriber, log);
        queue.take()
    }

    #[test]
    fn warnings_and_errors_are_captured_with_their_fields() {
        let lines = capture(|| {
            tracing::warn!(error = %"disk full", seq = 7, "could not persist the session");
            tracing::error!("boom");
        });
        assert_eq!(
            lines,
            vec![
                LogLine {
                    is_error: false,
                    text: "AeThexCloud: could not persist the session error=disk full seq=7".into(),
                },
                LogLine {
                    is_error: true,
                    text: "AeThexCloud: boom".into(),
                },
            ]
        );
    }

    #[test]
    fn info_and_debug_are_ignored() {
        let lines = capture(|| {
            tracing::info!("hello");
            tracing::debug!(error = "x", "detail");
        });
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn the_queue_keeps_the_newest_lines_when_full() {
        let lines = capture(|| {
            for i in 0..CAPACITY + 10 {
                tracing::warn!("line {i}");
            }
        });
        assert_eq!(lines.len(), CAPACITY);
        assert_eq!(lines[0].text, "AeThexCloud: line 10");
        assert_eq!(
            lines.last().unwrap().text,
            format!("AeThexCloud: line {}", CAPACITY + 9)
        );
    }
}
