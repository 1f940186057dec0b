//! Issue 23's targets, read from one `cargo xtask bench` run's figures: every target with
//! the figure it is held against and whether it is met, printed after the run and kept in
//! `latest.json` under `targets`, so that a user's run says the same as BENCHMARKS.md.

use serde_json::{json, Value};

/// A target: what it checks, the figure, the bound, met or not (`None`: a figure is missing).
fn target(what: String, figure: Option<f64>, bound: f64, at_most: bool) -> Value {
    let met = figure.map(|f| if at_most { f <= bound } else { f >= bound });
    json!({"what": what, "figure": figure, "bound": bound, "met": met})
}

/// Every target of issue 23 against the combined figures `all` (one object per bench).
pub fn of(all: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let watched = all["modes"]["watched"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (loop_name, modes) in &watched {
        for (mode, v) in modes.as_object().into_iter().flatten() {
            if mode == "alone" || mode == "floor" {
                continue;
            }
            out.push(target(
                format!("in-kernel ns per watched TCP connect, {mode}, {loop_name}"),
                v["kernel_ns_per_connect"].as_f64(),
                1000.0,
                true,
            ));
            out.push(target(
                format!("watched TCP connect p50 on/off, {mode}, {loop_name}"),
                v["connect_p50_ratio"].as_f64(),
                1.10,
                true,
            ));
        }
    }
    // The benchmark's own loop (bench `capture`: the monitor watching its own process, as
    // `audit -- LOOP` does, its own listener) against the same mode from outside.
    let own = watched
        .iter()
        .find(|(k, _)| k.starts_with("own listener"))
        .map(|(_, v)| &v["audit -- LOOP"]["kernel_ns_per_connect"]);
    let inside = all["capture"]["watched_tcp_connect"]["in_kernel_ns_per_connect"].as_f64();
    let agreement = match (inside, own.and_then(Value::as_f64)) {
        (Some(i), Some(o)) if o > 0.0 => Some(((i - o) / o).abs()),
        _ => None,
    };
    out.push(target(
        "in-kernel ns per connect: bench capture's own loop against `audit -- LOOP` from outside (relative difference)".into(),
        agreement,
        0.20,
        true,
    ));
    let unwatched = &all["modes"]["unwatched"];
    for (what, key, bound) in [
        (
            "getpid() beside the idle daemon",
            "getpid_daemon_vs_alone",
            1.01,
        ),
        (
            "unwatched TCP connect, daemon --attach apps",
            "tcp_connect_apps_vs_alone",
            1.01,
        ),
        (
            "unwatched UDP connect() against the empty-program floor",
            "udp_connect_vs_floor",
            1.10,
        ),
    ] {
        out.push(target(what.into(), unwatched[key].as_f64(), bound, true));
    }
    let store = &all["store"];
    out.push(target(
        "store bytes per connection row".into(),
        store["bytes_per_connection_row"].as_f64(),
        150.0,
        true,
    ));
    for key in ["report_7d_all_apps_ms", "report_7d_one_app_ms"] {
        out.push(target(
            format!("7-day report over 1,000,000 rows ({key})"),
            store[key].as_f64(),
            1000.0,
            true,
        ));
    }
    out
}

/// One line a target: `met`, `MISSED` or `no figure`.
pub fn print(targets: &[Value]) {
    let met = targets.iter().filter(|t| t["met"] == json!(true)).count();
    eprintln!("xtask: issue 23's targets: {met} of {} met", targets.len());
    for t in targets {
        let state = match t["met"].as_bool() {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "no figure",
        };
        eprintln!(
            "  {state} {}: {} (bound {})",
            t["what"].as_str().unwrap_or(""),
            t["figure"],
            t["bound"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(ratio: f64, inside: f64) -> Value {
        json!({
            "modes": {"watched": {"own listener (x)": {
                "alone": {"connect_p50_ratio": 1.5},
                "floor": {"kernel_ns_per_connect": 400.0},
                "audit -- LOOP": {"kernel_ns_per_connect": 600.0, "connect_p50_ratio": ratio},
            }}, "unwatched": {"getpid_daemon_vs_alone": 1.0, "tcp_connect_apps_vs_alone": 1.0, "udp_connect_vs_floor": 1.05}},
            "capture": {"watched_tcp_connect": {"in_kernel_ns_per_connect": inside}},
            "store": {"bytes_per_connection_row": 115.0, "report_7d_all_apps_ms": 200.0, "report_7d_one_app_ms": 190.0},
        })
    }

    fn missed(t: &[Value]) -> Vec<&str> {
        t.iter()
            .filter(|t| t["met"] != json!(true))
            .map(|t| t["what"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn targets_count_every_watched_mode_but_the_loop_alone_and_the_floor() {
        let t = of(&figures(1.05, 620.0));
        assert_eq!(t.len(), 2 + 1 + 3 + 3);
        assert!(missed(&t).is_empty(), "{:?}", missed(&t));
    }

    #[test]
    fn targets_say_missed_for_a_p50_over_the_bound_and_a_loop_that_disagrees() {
        let t = of(&figures(1.11, 300.0));
        let m = missed(&t);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("watched TCP connect p50"));
        assert!(m[1].contains("bench capture's own loop"));
    }

    #[test]
    fn targets_without_a_figure_are_not_met() {
        let t = of(&json!({}));
        assert!(t.iter().all(|t| t["met"].is_null()));
        assert_eq!(t.len(), 1 + 3 + 3);
    }
}
