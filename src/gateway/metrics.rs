//! Counters for `/metrics`, in the Prometheus text format. (The accounting issue adds
//! histograms, tokens and cost.)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// rule -> model -> provider -> status -> count; nested so that counting allocates only the
    /// first time a label set is seen.
    requests: Mutex<Requests>,
}

type Requests = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<u16, u64>>>>;

fn slot<'m, V: Default>(m: &'m mut BTreeMap<String, V>, k: &str) -> &'m mut V {
    if !m.contains_key(k) {
        m.insert(k.to_string(), V::default());
    }
    match m.get_mut(k) {
        Some(v) => v,
        // INVARIANT: the key was inserted just above.
        None => unreachable!("metrics slot vanished"),
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Counts a request.
    pub fn request(&self, rule: &str, model: &str, provider: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot(slot(slot(&mut m, rule), model), provider).entry(status).or_default() += 1;
    }

    /// Renders every metric.
    pub fn render(&self, version: &str, reloads_ok: u64, reloads_failed: u64, breakers: &[(String, u8)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP yardmaster_requests_total Requests by rule, model, provider and status.\n# TYPE yardmaster_requests_total counter\n");
        let m = self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (rule, models) in m.iter() {
            for (model, providers) in models {
                for (provider, statuses) in providers {
                    for (status, n) in statuses {
                        let _ = writeln!(
                            out,
                            "yardmaster_requests_total{{rule=\"{}\",model=\"{}\",provider=\"{}\",status=\"{status}\"}} {n}",
                            esc(rule),
                            esc(model),
                            esc(provider)
                        );
                    }
                }
            }
        }
        out.push_str("# HELP yardmaster_policy_reloads_total Policy reloads by result.\n# TYPE yardmaster_policy_reloads_total counter\n");
        let _ = writeln!(out, "yardmaster_policy_reloads_total{{result=\"ok\"}} {reloads_ok}");
        let _ = writeln!(out, "yardmaster_policy_reloads_total{{result=\"failed\"}} {reloads_failed}");
        out.push_str("# HELP yardmaster_policy_info The live policy version.\n# TYPE yardmaster_policy_info gauge\n");
        let _ = writeln!(out, "yardmaster_policy_info{{version=\"{}\"}} 1", esc(version));
        out.push_str("# HELP yardmaster_breaker_state Breaker state per model: 0 closed, 1 half-open, 2 open.\n# TYPE yardmaster_breaker_state gauge\n");
        for (model, state) in breakers {
            let _ = writeln!(out, "yardmaster_breaker_state{{model=\"{}\"}} {state}", esc(model));
        }
        out
    }
}
