//! The run's outputs: `result.json`, `report.md` and three SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::run::Results;
use crate::sampler::Sample;
use crate::svg::{Chart, Series};
use crate::tracker::Done;

fn fmt_calls(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "–".into();
    }
    let total: f64 = m.values().sum();
    format!(
        "{total:.0} ({})",
        m.iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

/// Median of each `bin`-second bucket of (x, y) points.
fn binned_median(points: &mut [(f64, f64)], bin: f64) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let b = (points[i].0 / bin).floor();
        let mut ys: Vec<f64> = Vec::new();
        while i < points.len() && (points[i].0 / bin).floor() == b {
            ys.push(points[i].1);
            i += 1;
        }
        ys.sort_by(f64::total_cmp);
        out.push((b * bin + bin / 2.0, ys[ys.len() / 2]));
    }
    out
}

/// Per-replica API calls per minute over a sliding `window` of seconds.
fn call_rates(samples: &[Sample], window: f64) -> Vec<Series> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        for r in s.replicas.iter().filter(|r| r.up) {
            by.entry(r.identity.clone())
                .or_default()
                .push((s.t, r.api_total()));
        }
    }
    let mut out: Vec<Series> = by
        .into_iter()
        .map(|(name, pts)| {
            let mut rates = Vec::new();
            let mut j = 0;
            for i in 0..pts.len() {
                while j < i && pts[i].0 - pts[j + 1].0 >= window {
                    j += 1;
                }
                let (t0, c0) = pts[j];
                let (t1, c1) = pts[i];
                if t1 - t0 >= window * 0.5 && c1 >= c0 {
                    rates.push((t1, (c1 - c0) / (t1 - t0) * 60.0));
                }
            }
            Series {
                name,
                points: rates,
            }
        })
        .collect();
    let api: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.t, s.apiserver_by_verb.as_ref()?.values().sum::<f64>())))
        .collect();
    let pts: Vec<(f64, f64)> = api
        .windows(2)
        .filter(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0) * 60.0))
        .collect();
    if !pts.is_empty() {
        out.push(Series {
            name: "API server (all clients)".into(),
            points: pts,
        });
    }
    out
}

/// Writes everything into `out`.
pub fn write(out: &Path, r: &Results, samples: &[Sample], done: &[Done]) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(r)?;
    std::fs::write(out.join("result.json"), json).context("writing result.json")?;

    // Charts.
    let mut by_scenario: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for d in done.iter().filter(|d| d.scenario != "expiry-delete") {
        by_scenario
            .entry(d.scenario.clone())
            .or_default()
            .push((d.at, d.latency.as_secs_f64() * 1000.0));
    }
    let latency = Chart {
        title: "Event-to-done latency (median per 2 s of completions)",
        x_label: "seconds since the start of the run",
        y_label: "milliseconds (log)",
        series: by_scenario
            .into_iter()
            .map(|(name, mut pts)| Series {
                points: binned_median(&mut pts, 2.0),
                name,
            })
            .collect(),
        bands: &r.phases,
        log_y: true,
    };
    std::fs::write(out.join("latency.svg"), latency.render())?;
    let mut mem: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        for rep in &s.replicas {
            if let Some(v) = rep.rss_mib {
                mem.entry(rep.identity.clone()).or_default().push((s.t, v));
            }
        }
    }
    let memory = Chart {
        title: "Resident memory per replica",
        x_label: "seconds since the start of the run",
        y_label: "MiB",
        series: mem
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
        bands: &r.phases,
        log_y: false,
    };
    std::fs::write(out.join("memory.svg"), memory.render())?;
    let calls = Chart {
        title: "API calls per minute (10 s window)",
        x_label: "seconds since the start of the run",
        y_label: "calls per minute (log)",
        series: call_rates(samples, 10.0),
        bands: &r.phases,
        log_y: true,
    };
    std::fs::write(out.join("api-calls.svg"), calls.render())?;

    std::fs::write(out.join("report.md"), markdown(r)).context("writing report.md")?;
    Ok(())
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# block-controller load test: {} namespaces, {} replicas ({})\n",
        r.namespaces,
        r.replicas,
        if r.passed { "passed" } else { "FAILED" }
    );
    let _ = writeln!(o, "- command: `{}`", r.command);
    let _ = writeln!(o, "- started {}, took {:.0} s", r.started, r.total_seconds);
    let _ = writeln!(
        o,
        "- machine: {} CPUs ({}), {} memory, kernel {}; API server, etcd, controller manager, every replica and the load generator all on this one box",
        r.machine.get("cpus").map_or("?", String::as_str),
        r.machine.get("cpu").map_or("?", String::as_str),
        r.machine.get("memory").map_or("?", String::as_str),
        r.machine.get("kernel").map_or("?", String::as_str),
    );
    let _ = writeln!(o, "- API server {}; {}", r.server_version, r.mode);
    let _ = writeln!(
        o,
        "- {} hash ranges; {:.0} % of namespaces hold workloads; controller flags: `{}`",
        r.ranges,
        r.workload_fraction * 100.0,
        if r.controller_args.is_empty() {
            "(defaults)".to_string()
        } else {
            r.controller_args.join(" ")
        }
    );
    let _ = writeln!(
        o,
        "- population: {} existed, {} created in {:.0} s ({} failures)\n",
        r.population.existing, r.population.created, r.population.seconds, r.population.failures
    );
    if !r.failures.is_empty() {
        let _ = writeln!(o, "## Failures\n");
        for f in &r.failures {
            let _ = writeln!(o, "- {f}");
        }
        let _ = writeln!(o);
    }

    // Against the seed report.
    let _ = writeln!(o, "## Next to the seed report's figures\n");
    let _ = writeln!(o, "| figure | seed report's target | measured | met |");
    let _ = writeln!(o, "| --- | --- | --- | --- |");
    if let Some(peak) = r
        .memory
        .iter()
        .max_by(|a, b| a.peak_mib.total_cmp(&b.peak_mib))
    {
        let _ = writeln!(
            o,
            "| memory per replica | < 512 MB | peak {:.0} MiB ({}) | {} |",
            peak.peak_mib,
            peak.identity,
            yes(peak.peak_mib * 1.048_576 < 512.0)
        );
    }
    if let Some(idle) = &r.idle {
        let worst = idle
            .per_replica_per_minute
            .iter()
            .map(|(id, v)| (id, v.values().sum::<f64>()))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((id, v)) = worst {
            let _ = writeln!(
                o,
                "| API calls per minute, idle | < 100 | {v:.1} per replica at most ({id}); {:.1} over all replicas | {} |",
                idle.per_replica_per_minute
                    .values()
                    .map(|m| m.values().sum::<f64>())
                    .sum::<f64>(),
                yes(v < 100.0)
            );
        }
    }
    for s in r
        .steps
        .iter()
        .filter(|s| s.name == "burst-lock" || s.name == "trickle")
    {
        let _ = writeln!(
            o,
            "| response latency ({}) | ~100 ms | p50 {:.0} ms, p99 {:.0} ms | {} |",
            s.name,
            s.latency_ms.p50,
            s.latency_ms.p99,
            yes(s.latency_ms.p50 <= 150.0)
        );
    }
    if let Some(s) = r.steps.iter().find(|s| s.name == "burst-lock") {
        let _ = writeln!(
            o,
            "| processing capacity | 1,000,000 namespaces/min | {:.0} namespaces/min ({:.1}/s, burst of {} locks) | {} |",
            s.throughput_per_s * 60.0,
            s.throughput_per_s,
            s.targets,
            yes(s.throughput_per_s * 60.0 >= 1_000_000.0)
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Start-up\n");
    let _ = writeln!(
        o,
        "All replicas ready and ranges balanced {:.1} s after the first start; API calls until then: {}.\n",
        r.startup_seconds,
        fmt_calls(&r.startup_calls)
    );

    if let Some(idle) = &r.idle {
        let _ = writeln!(o, "## Idle ({:.0} s)\n", idle.seconds);
        let _ = writeln!(o, "| replica | calls/min | by verb |");
        let _ = writeln!(o, "| --- | --- | --- |");
        for (id, v) in &idle.per_replica_per_minute {
            let _ = writeln!(
                o,
                "| {id} | {:.1} | {} |",
                v.values().sum::<f64>(),
                v.iter()
                    .map(|(k, x)| format!("{k} {x:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            o,
            "\nAPI server, every client (`apiserver_request_total`, which has no user-agent label): {:.1}/min ({}).",
            idle.apiserver_per_minute.values().sum::<f64>(),
            idle.apiserver_per_minute
                .iter()
                .map(|(k, x)| format!("{k} {x:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !idle.audit_per_minute.is_empty() {
            let _ = writeln!(
                o,
                "The API server's audit log (mutating requests only, by the controller's user agent): {}.",
                idle.audit_per_minute
                    .iter()
                    .map(|(k, x)| format!("{k} {x:.1}/min"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Scenarios\n");
    let _ = writeln!(o, "Latency: from just before the write that asks for the change (label, BlockRequest, creation) to the load generator's watch seeing the controller's marker `core.clawcloud.run/locked-at` appear (lock) or the marker and the unlock time gone (unlock), or the namespace being deleted (expiry). Throughput: completions per second from the first write to the last completion.\n");
    let _ = writeln!(o, "| step | targets | done | lost | p50 ms | p90 ms | p99 ms | max ms | per s | s | writes s | controller calls | API server requests |");
    let _ = writeln!(
        o,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for s in &r.steps {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
            s.name,
            s.targets,
            s.completed,
            s.lost,
            s.latency_ms.p50,
            s.latency_ms.p90,
            s.latency_ms.p99,
            s.latency_ms.max,
            s.throughput_per_s,
            s.seconds,
            s.write_seconds,
            fmt_calls(&s.controller_calls),
            fmt_calls(&s.apiserver_calls)
        );
    }
    let _ = writeln!(o);
    for s in r.steps.iter().filter(|s| !s.notes.is_empty()) {
        for n in &s.notes {
            let _ = writeln!(o, "- {}: {n}", s.name);
        }
    }
    for s in r.steps.iter().filter(|s| s.lost > 0) {
        let _ = writeln!(o, "- {}: lost, e.g. {}", s.name, s.lost_sample.join(", "));
    }
    let _ = writeln!(o);

    if !r.faults.is_empty() {
        let _ = writeln!(o, "## Scaling and faults\n");
        let _ = writeln!(o, "Unowned range-seconds: ∫ (ranges − Σ owned_ranges over the live replicas) dt, sampled every 100 ms during each event; over the whole run after start-up (background samples): {:.1} range-seconds.\n", r.unowned_range_seconds_total);
        let _ = writeln!(
            o,
            "| event | what | until | seconds | unowned range-s | longest gap s |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- |");
        for f in &r.faults {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.2}{} | {:.1} | {:.2} |",
                f.name,
                f.what,
                f.until,
                f.waited.seconds,
                if f.waited.reached {
                    ""
                } else {
                    " (not reached)"
                },
                f.waited.unowned_range_seconds,
                f.waited.max_gap_seconds
            );
        }
        let _ = writeln!(o);
        for f in &r.faults {
            for n in &f.notes {
                let _ = writeln!(o, "- {}: {n}", f.name);
            }
        }
        let _ = writeln!(o);
    }

    if let Some(c) = &r.capacity {
        let _ = writeln!(o, "## Raw capacity of the API server\n");
        let _ = writeln!(o, "The controller's call mix for a lock (10 calls) and an unlock (8 calls) of a namespace without workloads, issued by the load generator itself at concurrency {} for {:.0} s over {} scratch namespaces.\n", c.concurrency, c.seconds, c.namespaces);
        let _ = writeln!(
            o,
            "| flows/s | calls/s | lock flows | unlock flows | errors | lock flow p50 / p99 ms |"
        );
        let _ = writeln!(o, "| --- | --- | --- | --- | --- | --- |");
        let _ = writeln!(
            o,
            "| {:.1} | {:.0} | {} | {} | {} | {:.0} / {:.0} |\n",
            c.flows_per_second,
            c.calls_per_second,
            c.lock_flows,
            c.unlock_flows,
            c.errors,
            c.lock_flow_ms[0],
            c.lock_flow_ms[2]
        );
        if let Some(e) = &c.first_error {
            let _ = writeln!(o, "First failed call: {e}\n");
        }
        for s in r
            .steps
            .iter()
            .filter(|s| s.name.starts_with("burst") || s.name.starts_with("blockrequest"))
        {
            let calls: f64 = s.controller_calls.values().sum();
            let _ = writeln!(
                o,
                "- {}: {:.1} namespaces/s = {:.1} % of the raw flow rate; controller {:.0} calls/s = {:.1} % of the raw call rate",
                s.name,
                s.throughput_per_s,
                100.0 * s.throughput_per_s / c.flows_per_second.max(1e-9),
                calls / s.seconds.max(1e-9),
                100.0 * calls / s.seconds.max(1e-9) / c.calls_per_second.max(1e-9)
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Memory per replica (RSS)\n");
    let _ = writeln!(
        o,
        "| replica | after start-up MiB | peak MiB | at the end MiB |"
    );
    let _ = writeln!(o, "| --- | --- | --- | --- |");
    for m in &r.memory {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} | {} |",
            m.identity,
            f(m.after_start_mib),
            m.peak_mib,
            f(m.last_mib)
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Ownership check (API server audit log)\n");
    let a = &r.audit;
    if a.available {
        let _ = writeln!(o, "{} audit entries; {} controller writes to managed namespaces checked against {} ownership epochs (from the range Leases' holders); {} leader-duty writes not range work; **{} violations**.\n", a.entries, a.writes_checked, a.epochs, a.leader_writes, a.violations);
        for (id, n) in &a.writes_by_replica {
            let _ = writeln!(o, "- {id}: {n} writes checked");
        }
        for v in &a.violation_sample {
            let _ = writeln!(o, "- violation: {v}");
        }
        let _ = writeln!(
            o,
            "\nController mutating requests over the run, by user agent:\n"
        );
        for (id, m) in &a.controller_writes {
            let _ = writeln!(
                o,
                "- {id}: {}",
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    } else {
        let _ = writeln!(o, "Not available: {}", a.note);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "## Final state\n");
    let _ = writeln!(
        o,
        "Namespaces whose state disagrees with their label at the end: {}. Workloads not restored after unlock: {}. Replicas that exited on their own: {}.\n",
        r.final_mismatches.len(),
        r.workload_restore_failures.len(),
        r.crashed_replicas.len()
    );
    let _ = writeln!(o, "## Charts\n");
    let _ = writeln!(
        o,
        "![latency](latency.svg)\n\n![memory](memory.svg)\n\n![API calls](api-calls.svg)"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_per_bin() {
        let mut pts = vec![(0.1, 5.0), (0.5, 1.0), (1.9, 3.0), (2.5, 7.0)];
        assert_eq!(binned_median(&mut pts, 2.0), vec![(1.0, 3.0), (3.0, 7.0)]);
    }

    #[test]
    fn an_empty_run_renders() {
        let md = markdown(&Results::default());
        assert!(md.contains("FAILED") && md.contains("## Charts"));
    }
}
