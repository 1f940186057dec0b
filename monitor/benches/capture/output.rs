//! The capture benchmark's output: the table on stdout and the JSON file.

use serde_json::json;

use super::*;

/// Everything measured.
pub(super) struct Results {
    pub(super) unwatched: Vec<Scenario>,
    pub(super) watched: Watched,
    /// One producer, then two.
    pub(super) floods: [Flood; 2],
    pub(super) short: ShortLived,
    pub(super) startup: Startup,
}

/// Prints the table and the other scenarios' lines.
pub(super) fn print_results(r: &Results) {
    println!("scenario                               off (ns/op)        on (ns/op)        on/off");
    for s in &r.unwatched {
        print_row(s.label, &s.rounds);
    }
    print_watched(&r.watched);
    let [fl, fl2] = &r.floods;
    println!(
        "watched flood: {:.0} records/s delivered over {:.1}s; generated {} = delivered {} + lost {}: {}",
        fl.records_per_s(),
        fl.seconds,
        fl.generated,
        fl.delivered,
        fl.lost,
        if fl.exact() { "exact" } else { "MISMATCH" }
    );
    println!(
        "watched flood, 2 producers: {:.0} records/s delivered; generated {} = delivered {} + lost {}: {}",
        fl2.records_per_s(),
        fl2.generated,
        fl2.delivered,
        fl2.lost,
        if fl2.exact() { "exact" } else { "MISMATCH" }
    );
    let ShortLived {
        children,
        attributed,
        secs: short_secs,
    } = r.short;
    println!(
        "1,000 short-lived processes: {children} connected, {attributed} attributed with exe and parent ({:.1}%) in {short_secs:.1}s",
        100.0 * attributed as f64 / 1000.0
    );
    println!(
        "start-up: built-in policies {:.1} ms, + programs loaded and attached = {:.1} ms",
        r.startup.policies * 1e3,
        r.startup.total * 1e3
    );
}

/// Writes the results as JSON to `$BW_BENCH_OUT`; returns where.
pub(super) fn write_json(r: &Results) -> String {
    let mut out = serde_json::Map::new();
    for s in &r.unwatched {
        out.insert(s.key.into(), s.rounds.json());
    }
    let [fl, fl2] = &r.floods;
    let ShortLived {
        children,
        attributed,
        secs,
    } = r.short;
    out.insert("watched_tcp_connect".into(), r.watched.json());
    out.insert("watched_flood".into(), fl.json());
    out.insert("watched_flood_2_producers".into(), fl2.json());
    out.insert(
        "short_lived_1000".into(),
        json!({"connected": children, "attributed": attributed,
            "share": attributed as f64 / 1000.0, "seconds": secs, "target_share": 1.0}),
    );
    out.insert(
        "startup".into(),
        json!({"policies_ms": r.startup.policies * 1e3, "total_ms": r.startup.total * 1e3, "target_ms": 300.0}),
    );
    let path =
        std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/capture.json".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    path
}

pub(super) fn print_watched(w: &Watched) {
    let (off, on, total) = (w.off, w.on, w.total);
    println!(
        "watched TCP connect p50: off {:.1} us, on {:.1} us: {:.3}x",
        off / 1e3,
        on / 1e3,
        on / off
    );
    println!("in-kernel per connect: {total:.0} ns, woken {}", w.wakeups);
    for (p, per) in &w.programs {
        if p.run_count > 0 {
            println!(
                "  {:<18} {:>8} runs  {:>7.0} ns/run  {:>7.0} ns per connect",
                p.name,
                p.run_count,
                p.run_time_ns as f64 / p.run_count as f64,
                per
            );
        }
    }
}
