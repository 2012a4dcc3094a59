//! Results: a table for people, one JSON line for scripts.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub server: String,
    pub clients: usize,
    pub duration_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub delivered_pct: f64,
    pub deliveries_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub errors: u64,
    pub closes: BTreeMap<String, u64>,
    /// Server CPU time per delivery (when --server-pid was given).
    pub server_cpu_us_per_delivery: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    /// The generator's own CPU use; near 100 % of its threads means the
    /// numbers are the generator's ceiling, not the server's.
    pub generator_cpu_pct: f64,
    pub extra: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn latency(&mut self, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        self.p50_us = h.value_at_quantile(0.5);
        self.p90_us = h.value_at_quantile(0.9);
        self.p99_us = h.value_at_quantile(0.99);
        self.p999_us = h.value_at_quantile(0.999);
        self.max_us = h.max();
    }

    pub fn print(&self) {
        println!();
        println!(
            "scenario            {}  ({} clients, {:.1} s measured, server {})",
            self.scenario, self.clients, self.duration_s, self.server
        );
        if self.expected > 0 {
            println!(
                "deliveries          {} of {} expected ({:.2} %), {:.0}/s",
                self.received, self.expected, self.delivered_pct, self.deliveries_per_s
            );
            println!(
                "latency us          p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
            );
        }
        if let Some(cpu) = self.server_cpu_us_per_delivery {
            println!(
                "server cpu          {:.3} us per delivery ({:.0} % of a core)",
                cpu,
                self.server_cpu_pct.unwrap_or(0.0)
            );
        }
        println!(
            "generator cpu       {:.0} % of a core",
            self.generator_cpu_pct
        );
        for (k, v) in &self.extra {
            println!("{k:<19} {v:.2}");
        }
        println!(
            "errors              {}   closes {:?}",
            self.errors, self.closes
        );
        for n in &self.notes {
            println!("note: {n}");
        }
        println!(
            "JSON {}",
            serde_json::to_string(self).expect("report serialises")
        );
    }
}
