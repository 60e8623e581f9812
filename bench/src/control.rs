//! What the scenarios share: per-connection slots the controller watches, waiting for
//! connections to come up, pacing, and tallying errors.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    sync::mpsc::UnboundedReceiver,
    task::JoinHandle,
    time::{sleep_until, Instant},
};

use crate::{error::Error, progress::Progress};

/// What the controller reads of a running connection task. Each task has its own, on its own
/// cache line, and only stores into it: no contention on the per-message path.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Slot {
    /// Deliveries received (subscriber) or messages sent (publisher).
    pub(crate) count: AtomicU64,
    /// A subscriber has everything it expects, a publisher has published everything (and had
    /// it acknowledged); or the connection failed.
    pub(crate) done: AtomicBool,
    /// A publisher's first send and its finish, ns since the bench epoch (0: not yet).
    pub(crate) first_ns: AtomicU64,
    pub(crate) done_ns: AtomicU64,
}

impl Slot {
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Relaxed)
    }
}

/// Waits until `n` connections have reported `Ok` on `rx`; the first `Err` or the deadline ends
/// the wait with an error. Returns the values reported.
pub(crate) async fn wait_ready<T>(
    rx: &mut UnboundedReceiver<Result<T, Error>>,
    n: usize,
    deadline: Instant,
    progress: &mut Progress,
    what: &str,
) -> Result<Vec<T>, Error> {
    let mut up = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while up.len() < n {
        tokio::select! {
            r = rx.recv() => match r {
                Some(Ok(v)) => up.push(v),
                Some(Err(e)) => return Err(e),
                None => return Err(Error(format!("{what}: connection tasks ended early"))),
            },
            _ = tick.tick() => progress.update(|| format!("{what}: {}/{n} up", up.len())),
            _ = sleep_until(deadline) => {
                return Err(Error(format!(
                    "timed out with {}/{n} {what} up (raise --timeout?)",
                    up.len()
                )))
            }
        }
    }
    Ok(up)
}

/// Awaits every task, giving them until `deadline` together; later ones are aborted and
/// reported as `None`.
pub(crate) async fn join_all<T>(tasks: Vec<JoinHandle<T>>, deadline: Instant) -> Vec<Option<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for mut t in tasks {
        match tokio::time::timeout_at(deadline, &mut t).await {
            Ok(Ok(v)) => out.push(Some(v)),
            Ok(Err(_)) => out.push(None),
            Err(_) => {
                t.abort();
                out.push(None);
            }
        }
    }
    out
}

/// Paces a publisher at `rate` messages per second (0: unlimited).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacer {
    start: Instant,
    rate: f64,
}

impl Pacer {
    pub(crate) fn new(rate: f64) -> Self {
        Self {
            start: Instant::now(),
            rate,
        }
    }

    /// How many messages may have been sent by now.
    pub(crate) fn allowed(&self) -> u64 {
        self.allowed_at(Instant::now())
    }

    fn allowed_at(&self, now: Instant) -> u64 {
        if self.rate > 0.0 {
            (now.saturating_duration_since(self.start).as_secs_f64() * self.rate) as u64 + 1
        } else {
            u64::MAX
        }
    }

    /// When message `k` (0-based) is due; `None` when unlimited.
    pub(crate) fn due(&self, k: u64) -> Option<Instant> {
        (self.rate > 0.0).then(|| self.start + Duration::from_secs_f64(k as f64 / self.rate))
    }
}

/// Errors seen after connections were up, counted by text.
#[derive(Debug, Default)]
pub(crate) struct ErrorTally(BTreeMap<String, usize>);

impl ErrorTally {
    pub(crate) fn add(&mut self, who: &str, e: &Error) {
        *self.0.entry(format!("{who}: {e}")).or_default() += 1;
    }

    pub(crate) fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// The most frequent few, as `N × text`.
    pub(crate) fn top(&self, n: usize) -> Vec<String> {
        let mut v: Vec<_> = self.0.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.into_iter()
            .take(n)
            .map(|(text, count)| format!("{count} × {text}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_schedule() {
        let p = Pacer::new(1000.0);
        assert_eq!(p.allowed_at(p.start), 1);
        assert_eq!(p.allowed_at(p.start + Duration::from_millis(10)), 11);
        assert_eq!(p.due(0), Some(p.start));
        assert_eq!(p.due(500), Some(p.start + Duration::from_millis(500)));
        let unlimited = Pacer::new(0.0);
        assert_eq!(unlimited.allowed(), u64::MAX);
        assert_eq!(unlimited.due(5), None);
    }

    #[test]
    fn error_tally() {
        let mut t = ErrorTally::default();
        t.add("subscriber", &Error("a".into()));
        t.add("subscriber", &Error("b".into()));
        t.add("subscriber", &Error("b".into()));
        assert_eq!(t.total(), 3);
        assert_eq!(t.top(1), vec!["2 × subscriber: b".to_string()]);
    }
}
