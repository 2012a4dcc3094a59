//! A histogram that each shard records into without a lock.
//!
//! prometheus-client's `Histogram` takes a write lock for every
//! observation, and all shards share it. The fan-out latency is observed
//! once per socket write, which made that lock and its cache line part of
//! every delivery's cost (profile: the writer's poll). Here each shard owns
//! its cells and is their only writer: an observation is two relaxed loads
//! and stores on the shard's own cache lines, no read-modify-write. A scrape
//! adds the shards' cells up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The registered histogram: its bucket bounds and every shard's cells.
/// Buckets double: `start`, `2 * start`, ... (what the fan-out latency
/// uses), so an observation finds its bucket from the float's exponent
/// instead of a search over the bounds (which showed in the profile).
#[derive(Debug, Clone)]
pub struct ShardedHistogram {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    scale: Scale,
    /// Upper bounds, ascending; the last bucket (+Inf) is implied.
    bounds: Box<[f64]>,
    /// One per [`ShardedHistogram::local`] (a shard's, for its life).
    cells: Mutex<Vec<Arc<Cells>>>,
}

#[derive(Debug)]
struct Cells {
    /// Per bucket (not cumulative), +Inf last.
    buckets: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// One shard's handle: records into cells only this shard writes.
#[derive(Debug)]
pub struct LocalHistogram {
    scale: Scale,
    cells: Arc<Cells>,
}

/// Doubling buckets: which one a value falls in.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// 1 / the first bound.
    inverse_start: f64,
    /// Bounded buckets; index `count` is +Inf.
    count: usize,
}

impl Scale {
    /// The bucket of `value`: the first whose bound is at least `value`.
    fn bucket(self, value: f64) -> usize {
        let ratio = value * self.inverse_start;
        if ratio.is_nan() || ratio <= 1.0 {
            return 0;
        }
        // ceil(log2(ratio)) from the bits: the exponent, plus one unless
        // the ratio is an exact power of two.
        let bits = ratio.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
        let exact = bits & ((1 << 52) - 1) == 0;
        let index = exponent + i64::from(!exact);
        (index.max(0) as usize).min(self.count)
    }
}

impl ShardedHistogram {
    /// `count` buckets from `start`, each bound twice the one before.
    pub fn doubling(start: f64, count: u16) -> ShardedHistogram {
        assert!(start > 0.0, "a histogram's first bound must be positive");
        ShardedHistogram {
            inner: Arc::new(Shared {
                scale: Scale {
                    inverse_start: 1.0 / start,
                    count: count.into(),
                },
                bounds: exponential_buckets(start, 2.0, count).collect(),
                cells: Mutex::new(Vec::new()),
            }),
        }
    }

    /// New cells for one writer thread (a shard). Recording from two
    /// threads into one handle's cells would lose counts, never memory.
    pub fn local(&self) -> LocalHistogram {
        let cells = Arc::new(Cells {
            buckets: (0..=self.inner.bounds.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        });
        self.inner.cells.lock().push(cells.clone());
        LocalHistogram {
            scale: self.inner.scale,
            cells,
        }
    }

    /// (sum, count, cumulative buckets) over every shard.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = &self.inner.bounds;
        let mut per_bucket = vec![0u64; bounds.len() + 1];
        let mut sum = 0.0;
        for cells in self.inner.cells.lock().iter() {
            for (total, cell) in per_bucket.iter_mut().zip(cells.buckets.iter()) {
                *total += cell.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(cells.sum.load(Ordering::Relaxed));
        }
        let mut running = 0;
        let buckets = bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(per_bucket)
            .map(|(bound, n)| {
                running += n;
                (bound, running)
            })
            .collect();
        (sum, running, buckets)
    }
}

impl LocalHistogram {
    pub fn observe(&self, value: f64) {
        let cell = &self.cells.buckets[self.scale.bucket(value)];
        // One writer: a load and a store, not an atomic add.
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = f64::from_bits(self.cells.sum.load(Ordering::Relaxed)) + value;
        self.cells.sum.store(sum.to_bits(), Ordering::Relaxed);
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_into_cumulative_buckets() {
        let h = ShardedHistogram::doubling(1.0, 3);
        let (a, b) = (h.local(), h.local());
        a.observe(0.5);
        a.observe(1.0); // a bound belongs to its bucket (le)
        b.observe(3.0);
        b.observe(100.0);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(sum, 104.5);
        assert_eq!(count, 4);
        assert_eq!(buckets, vec![(1.0, 2), (2.0, 2), (4.0, 3), (f64::MAX, 4)]);
    }

    #[test]
    fn a_value_lands_where_a_search_of_the_bounds_puts_it() {
        let h = ShardedHistogram::doubling(0.000_01, 18);
        let bounds = &h.inner.bounds;
        let mut value = 1e-7;
        while value < 10.0 {
            for v in [value, value * 1.000_001, value * 0.999_999] {
                let searched = bounds.partition_point(|&bound| bound < v);
                let found = h.inner.scale.bucket(v);
                // At a bound, rounding of `v / start` may put it one over.
                assert!(
                    found == searched
                        || (found == searched + 1 && bounds.get(searched) == Some(&v)),
                    "{v}: {found} vs {searched}"
                );
            }
            value *= 1.37;
        }
        for (i, &bound) in bounds.iter().enumerate() {
            let below = h.inner.scale.bucket(bound * 0.999);
            let above = h.inner.scale.bucket(bound * 1.001);
            assert_eq!((below, above), (i, i + 1), "{bound}");
        }
        assert_eq!(h.inner.scale.bucket(0.0), 0);
        assert_eq!(h.inner.scale.bucket(1e9), 18);
        assert_eq!(h.inner.scale.bucket(f64::INFINITY), 18);
    }
}
