//! A one-line progress indicator on stderr, redrawn at most every 200 ms, and only when stderr
//! is a terminal (otherwise the bench is quiet until its report).

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

const EVERY: Duration = Duration::from_millis(200);

/// The progress line.
#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    /// Redraws the line with `text()` if it is due; `text` is only called then.
    pub(crate) fn update(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{}", text());
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line.
    pub(crate) fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
        self.last = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
