//! Latency histogram and loss/duplicate accounting.
//!
//! Latencies go into one HdrHistogram per runtime worker thread (a thread-local: no lock, no
//! atomic, and a few hundred KiB per thread rather than per subscriber); each thread hands its
//! histogram over when the runtime stops it ([`flush_thread`] from `on_thread_stop`), and
//! [`take_latencies`] merges them. Loss and duplicates are counted per subscriber by
//! [`SeqTracker`], owned by the subscriber's task.

use std::{
    cell::RefCell,
    sync::{Mutex, PoisonError},
};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, 1 ns to 1 hour, to 3 significant digits.
const HIGHEST_NS: u64 = 3_600_000_000_000;
const SIGFIG: u8 = 3;

thread_local! {
    static LATENCY: RefCell<Option<Histogram<u64>>> = const { RefCell::new(None) };
}

static COLLECTED: Mutex<Vec<Histogram<u64>>> = Mutex::new(Vec::new());

/// A new, empty latency histogram.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("constant bounds are valid")
}

/// Records one latency on this thread's histogram.
#[inline]
pub(crate) fn record_latency(ns: u64) {
    LATENCY.with(|h| {
        h.borrow_mut()
            .get_or_insert_with(new_histogram)
            .saturating_record(ns.clamp(1, HIGHEST_NS));
    });
}

/// Hands this thread's histogram over to [`take_latencies`].
pub(crate) fn flush_thread() {
    if let Some(h) = LATENCY.with(RefCell::take) {
        COLLECTED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(h);
    }
}

/// All latencies recorded (and flushed) so far, merged; the collection is emptied.
pub(crate) fn take_latencies() -> Histogram<u64> {
    flush_thread();
    let mut all = new_histogram();
    for h in COLLECTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        // Same bounds, so `add` cannot fail.
        let _ = all.add(&h);
    }
    all
}

/// The percentiles the report shows, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// p50/p90/p99/max of a nanosecond histogram, in µs rounded to 0.1; `None` when it is empty.
pub(crate) fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    Some(Percentiles {
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        max: us(h.max()),
    })
}

/// How a [`SeqTracker`] tells lost and duplicated messages apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Accounting {
    /// One bit per (publisher, sequence): exact.
    Bitset,
    /// The next expected sequence per publisher: exact only if each publisher's messages arrive
    /// in order (a late one counts as a duplicate and its gap as lost).
    InOrder,
}

impl Accounting {
    /// Bitsets unless they would take more than `budget_bytes` over all subscribers.
    pub(crate) fn choose(
        subscribers: usize,
        publishers: usize,
        messages: u64,
        budget_bytes: u64,
    ) -> Self {
        let bits = (subscribers as u128) * (publishers as u128) * u128::from(messages);
        if bits.div_ceil(8) <= u128::from(budget_bytes) {
            Accounting::Bitset
        } else {
            Accounting::InOrder
        }
    }
}

/// What one subscriber has seen of `publishers × messages` expected messages.
#[derive(Debug)]
pub(crate) struct SeqTracker {
    messages: u64,
    publishers: usize,
    /// How many of the publishers publish to this subscriber's room.
    senders: u64,
    seen: Seen,
    /// Distinct (publisher, sequence) pairs received.
    pub(crate) unique: u64,
    /// Receptions of a pair already received.
    pub(crate) duplicated: u64,
    /// Deliveries whose publisher or sequence is out of range.
    pub(crate) invalid: u64,
}

#[derive(Debug)]
enum Seen {
    Bits(Vec<u64>),
    Next(Vec<u64>),
}

impl SeqTracker {
    pub(crate) fn new(publishers: usize, messages: u64, accounting: Accounting) -> Self {
        let seen = match accounting {
            Accounting::Bitset => {
                let words = (publishers as u64 * messages).div_ceil(64);
                Seen::Bits(vec![0; usize::try_from(words).unwrap_or(usize::MAX)])
            }
            Accounting::InOrder => Seen::Next(vec![0; publishers]),
        };
        Self {
            messages,
            publishers,
            senders: publishers as u64,
            seen,
            unique: 0,
            duplicated: 0,
            invalid: 0,
        }
    }

    /// Only `senders` of the publishers publish to this subscriber's room.
    pub(crate) fn with_senders(mut self, senders: u64) -> Self {
        self.senders = senders;
        self
    }

    /// Messages this subscriber should receive.
    pub(crate) fn expected(&self) -> u64 {
        self.senders * self.messages
    }

    /// Every expected message has arrived.
    pub(crate) fn complete(&self) -> bool {
        self.unique >= self.expected()
    }

    /// Expected messages not (yet) received.
    pub(crate) fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }

    /// Records message `s` of publisher `p`.
    #[inline]
    pub(crate) fn record(&mut self, p: u32, s: u64) {
        let p = p as usize;
        if p >= self.publishers || s >= self.messages {
            self.invalid += 1;
            return;
        }
        match &mut self.seen {
            Seen::Bits(bits) => {
                let i = p as u64 * self.messages + s;
                let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
                match bits.get_mut(word) {
                    Some(w) if *w & bit != 0 => self.duplicated += 1,
                    Some(w) => {
                        *w |= bit;
                        self.unique += 1;
                    }
                    None => self.invalid += 1,
                }
            }
            Seen::Next(next) => match next.get_mut(p) {
                Some(n) if s >= *n => {
                    // In order, or after a gap (the gap stays lost).
                    *n = s + 1;
                    self.unique += 1;
                }
                Some(_) => self.duplicated += 1,
                None => self.invalid += 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand_microseconds() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        let p = percentiles(&h).expect("not empty");
        // 3 significant digits: within 0.1 %.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.1;
        assert!(close(p.p50, 500.0), "{p:?}");
        assert!(close(p.p90, 900.0), "{p:?}");
        assert!(close(p.p99, 990.0), "{p:?}");
        assert!(close(p.max, 1000.0), "{p:?}");
    }

    #[test]
    fn percentiles_of_nothing() {
        assert_eq!(percentiles(&new_histogram()), None);
    }

    #[test]
    fn sub_microsecond_values_round_to_tenths() {
        let mut h = new_histogram();
        h.record(1).expect("in range");
        h.record(1_234).expect("in range");
        let p = percentiles(&h).expect("not empty");
        assert_eq!(p.p50, 0.0);
        assert_eq!(p.max, 1.2);
    }

    #[test]
    fn thread_histograms_merge() {
        // Other tests may record on other threads concurrently; only this thread's values and
        // those of the threads it starts are asserted on, as a lower bound.
        let handles: Vec<_> = (0..3)
            .map(|i| {
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        record_latency(1_000_000 * (i + 1));
                    }
                    flush_thread();
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let all = take_latencies();
        assert!(all.len() >= 30);
        assert!(all.max() >= 3_000_000);
    }

    fn run(acc: Accounting, publishers: usize, messages: u64, feed: &[(u32, u64)]) -> SeqTracker {
        let mut t = SeqTracker::new(publishers, messages, acc);
        for &(p, s) in feed {
            t.record(p, s);
        }
        t
    }

    #[test]
    fn all_delivered_once() {
        for acc in [Accounting::Bitset, Accounting::InOrder] {
            let feed: Vec<_> = (0..100).flat_map(|s| [(0, s), (1, s)]).collect();
            let t = run(acc, 2, 100, &feed);
            assert!(t.complete());
            assert_eq!(
                (t.unique, t.lost(), t.duplicated, t.invalid),
                (200, 0, 0, 0)
            );
        }
    }

    #[test]
    fn losses_and_duplicates_bitset_exact_even_out_of_order() {
        // Publisher 0: 0..10 minus {3, 7}, with 5 twice, out of order; publisher 1: only 9.
        let feed = [
            (0, 1),
            (0, 0),
            (0, 2),
            (0, 5),
            (0, 4),
            (0, 5),
            (0, 6),
            (0, 9),
            (0, 8),
            (1, 9),
            (1, 9),
            (2, 0),
            (0, 10),
        ];
        let t = run(Accounting::Bitset, 2, 10, &feed);
        assert_eq!(t.expected(), 20);
        assert_eq!(t.unique, 9);
        assert_eq!(t.lost(), 11);
        assert_eq!(t.duplicated, 2);
        assert_eq!(t.invalid, 2);
        assert!(!t.complete());
    }

    #[test]
    fn losses_and_duplicates_in_order() {
        // 0 1 2 (gap 3 4) 5 5 6 (late 4 counted as a duplicate) 9.
        let feed = [
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 5),
            (0, 5),
            (0, 6),
            (0, 4),
            (0, 9),
        ];
        let t = run(Accounting::InOrder, 1, 10, &feed);
        assert_eq!(t.unique, 6);
        assert_eq!(t.lost(), 4);
        assert_eq!(t.duplicated, 2);
    }

    #[test]
    fn bitset_spans_word_boundaries() {
        let feed: Vec<_> = (0..3u32)
            .flat_map(|p| (0..70).map(move |s| (p, s)))
            .collect();
        let t = run(Accounting::Bitset, 3, 70, &feed);
        assert!(t.complete());
        assert_eq!(t.duplicated, 0);
    }

    #[test]
    fn accounting_falls_back_over_budget() {
        assert_eq!(
            Accounting::choose(1000, 1, 1_000_000, 512 << 20),
            Accounting::Bitset
        );
        assert_eq!(
            Accounting::choose(10_000, 10, 1_000_000, 512 << 20),
            Accounting::InOrder
        );
    }
}
