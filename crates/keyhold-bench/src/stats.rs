//! Latency and outcome statistics: one [`Recorder`] per connection task, merged into a
//! [`Summary`] at the end of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histogram tracks exactly (longer ones are clamped to it): 5 minutes.
const MAX_TRACKED_NANOS: u64 = 300_000_000_000;

/// What one connection task saw: latencies of the successful (2xx) requests, the status
/// codes of every answer, and the transport errors (connect, send, read) by kind.
#[derive(Debug, Clone)]
pub struct Recorder {
    latencies: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            // 1 ns .. 5 min at 3 significant digits (0.1% resolution).
            latencies: Histogram::new_with_bounds(1, MAX_TRACKED_NANOS, 3)
                .expect("static histogram bounds are valid"),
            statuses: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
        }
    }

    /// Records one HTTP answer. Only 2xx answers enter the latency histogram; every
    /// status is counted.
    pub fn record_status(&mut self, status: u16, latency: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        if (200..300).contains(&status) {
            let nanos = u64::try_from(latency.as_nanos())
                .unwrap_or(u64::MAX)
                .clamp(1, MAX_TRACKED_NANOS);
            self.latencies
                .record(nanos)
                .expect("value is clamped into the histogram bounds");
        }
    }

    /// Records a request that got no HTTP answer at all.
    pub fn record_transport_error(&mut self, kind: &str) {
        *self.transport_errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Adds another recorder's observations to this one.
    pub fn merge(&mut self, other: &Recorder) {
        self.latencies
            .add(&other.latencies)
            .expect("histograms share their bounds");
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        for (kind, n) in &other.transport_errors {
            *self.transport_errors.entry(kind.clone()).or_default() += n;
        }
    }

    /// Number of 2xx answers.
    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Non-2xx answers plus transport errors.
    pub fn errors(&self) -> u64 {
        let bad_status: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        bad_status + self.transport_errors.values().sum::<u64>()
    }

    /// Every request that finished one way or another.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors.values().sum::<u64>()
    }

    /// Turns the observations into the numbers a run reports; `elapsed` is the measured
    /// interval (warm-up excluded).
    pub fn summarize(&self, elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64();
        let ok = self.ok();
        let h = &self.latencies;
        let ms = |nanos: u64| nanos as f64 / 1e6;
        let latency = if h.is_empty() {
            None
        } else {
            Some(LatencyMs {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
                mean: h.mean() / 1e6,
            })
        };
        Summary {
            elapsed_s: secs,
            requests: self.total(),
            ok,
            errors: self.errors(),
            throughput: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            latency_ms: latency,
            status: self
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            transport_errors: self.transport_errors.clone(),
        }
    }
}

/// Latency percentiles of the successful requests, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The measured part of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Seconds from the end of the warm-up to the last answer.
    pub elapsed_s: f64,
    /// Requests that finished (answered or failed) in the measured interval.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers plus transport errors.
    pub errors: u64,
    /// 2xx answers per second.
    pub throughput: f64,
    /// `None` when no request succeeded.
    pub latency_ms: Option<LatencyMs>,
    /// Count of answers per HTTP status.
    pub status: BTreeMap<String, u64>,
    /// Count of requests that got no answer, per kind (connect, send, body).
    pub transport_errors: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_of_a_uniform_run() {
        let mut r = Recorder::new();
        for v in 1..=100 {
            r.record_status(200, ms(v));
        }
        let s = r.summarize(Duration::from_secs(2));
        let l = s.latency_ms.unwrap();
        // 3 significant digits: within 0.1%.
        assert!((l.p50 - 50.0).abs() < 0.1, "p50 {}", l.p50);
        assert!((l.p90 - 90.0).abs() < 0.1, "p90 {}", l.p90);
        assert!((l.p99 - 99.0).abs() < 0.1, "p99 {}", l.p99);
        assert!((l.max - 100.0).abs() < 0.1, "max {}", l.max);
        assert!((l.mean - 50.5).abs() < 0.1, "mean {}", l.mean);
        assert_eq!(s.ok, 100);
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 0);
        assert!((s.throughput - 50.0).abs() < 1e-9);
    }

    #[test]
    fn sub_millisecond_latencies_keep_their_precision() {
        let mut r = Recorder::new();
        r.record_status(200, Duration::from_micros(123));
        let l = r.summarize(ms(1000)).latency_ms.unwrap();
        assert!((l.p50 - 0.123).abs() < 0.001, "p50 {}", l.p50);
    }

    #[test]
    fn errors_are_counted_not_timed() {
        let mut r = Recorder::new();
        r.record_status(200, ms(1));
        r.record_status(204, ms(1));
        r.record_status(401, ms(1000));
        r.record_status(503, ms(1000));
        r.record_status(503, ms(1000));
        r.record_transport_error("connect");
        let s = r.summarize(ms(1000));
        assert_eq!(s.ok, 2);
        assert_eq!(s.errors, 4);
        assert_eq!(s.requests, 6);
        assert_eq!(s.status.get("503"), Some(&2));
        assert_eq!(s.status.get("401"), Some(&1));
        assert_eq!(s.transport_errors.get("connect"), Some(&1));
        // The slow failures never reach the percentiles.
        assert!(s.latency_ms.unwrap().max < 1.01);
        assert!((s.throughput - 2.0).abs() < 1e-9);
    }

    #[test]
    fn no_success_means_no_latency() {
        let mut r = Recorder::new();
        r.record_status(500, ms(3));
        let s = r.summarize(ms(1000));
        assert_eq!(s.latency_ms, None);
        assert_eq!(s.throughput, 0.0);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for _ in 0..99 {
            a.record_status(200, ms(1));
        }
        b.record_status(200, ms(500));
        b.record_status(404, ms(1));
        b.record_transport_error("send");
        a.merge(&b);
        let s = a.summarize(ms(1000));
        assert_eq!(s.ok, 100);
        assert_eq!(s.errors, 2);
        let l = s.latency_ms.unwrap();
        assert!(l.p50 < 1.01);
        assert!((l.max - 500.0).abs() < 0.5);
    }

    #[test]
    fn absurd_latencies_are_clamped() {
        let mut r = Recorder::new();
        r.record_status(200, Duration::from_secs(3600));
        r.record_status(200, Duration::ZERO);
        let l = r.summarize(ms(1000)).latency_ms.unwrap();
        assert!(l.max <= MAX_TRACKED_NANOS as f64 / 1e6 * 1.001);
    }
}
