//! Policy matcher benchmarks (run by `cargo xtask bench`): load time of a 1,000,000-domain
//! list and look-ups per second. Output JSON at `$BW_BENCH_OUT` (default
//! bench-results/policy.json).

use std::{hint::black_box, time::Instant};

use brokerwatch::policy::{file, ImportSpec, Policy, BUILTIN};
use serde_json::json;

const N: usize = 1_000_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bw-policy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("million.txt");
    let mut text = String::with_capacity(N * 28);
    for i in 0..N {
        // Realistic shapes: a label or two under a registrable domain.
        text.push_str(&format!("||t{i}.track{}.example{}.com^\n", i % 997, i % 13));
    }
    std::fs::write(&list, &text).unwrap();
    drop(text);

    let spec: ImportSpec = format!("adblock:{}:ad-attribution", list.display())
        .parse()
        .unwrap();
    let files = || -> Vec<file::PolicyFile> {
        BUILTIN
            .iter()
            .map(|(n, t)| file::parse(n, t).unwrap())
            .collect()
    };
    let mut loads = Vec::new();
    let mut policy = None;
    for _ in 0..3 {
        let start = Instant::now();
        let p = Policy::resolve(files(), std::slice::from_ref(&spec)).unwrap();
        loads.push(start.elapsed().as_secs_f64());
        policy = Some(p);
    }
    let policy = policy.unwrap();
    let (domains, _, _) = policy.matcher_counts();
    loads.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // Look-ups: hits deep in the list, hits in the built-in list, and misses.
    let names: Vec<String> = (0..100_000)
        .map(|i| match i % 3 {
            0 => format!(
                "cdn.t{}.track{}.example{}.com",
                i * 7 % N,
                (i * 7 % N) % 997,
                (i * 7 % N) % 13
            ),
            1 => "a.b.graph.facebook.com".to_owned(),
            _ => format!("host{i}.nothing-here.example.org"),
        })
        .collect();
    let rounds = 10;
    let start = Instant::now();
    let mut hits = 0usize;
    for _ in 0..rounds {
        for n in &names {
            if policy.lookup(Some(black_box(n)), None).is_some() {
                hits += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let lookups = (rounds * names.len()) as f64;
    let ns_per = secs * 1e9 / lookups;
    assert_eq!(
        hits,
        rounds * (names.len() - names.len() / 3),
        "every hit found, no miss matched"
    );
    println!(
        "policy: {domains} domains loaded in {:.3}s (median of 3, min {:.3}s); lookup {:.0} ns ({:.2} M lookups/s)",
        loads[1],
        loads[0],
        ns_per,
        1e3 / ns_per
    );
    // Issue 15: the block plan for every meeting app when a rule blocks the whole list's
    // category (what the daemon computes at every reload).
    let mut with_block = files();
    with_block.push(
        file::parse(
            "block.toml",
            "[[rule]]\nid = \"b\"\napps = \"meeting\"\ncategory = \"ad-attribution\"\nseverity = \"medium\"\naction = \"block\"\n",
        )
        .unwrap(),
    );
    let blocking = Policy::resolve(with_block, std::slice::from_ref(&spec)).unwrap();
    let apps: Vec<_> = blocking.apps.apps.iter().map(Some).collect();
    let mut plans: Vec<(f64, usize, usize)> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let plan = blocking.block_plan(&apps, &[]);
            (
                start.elapsed().as_secs_f64(),
                plan.domains.len(),
                plan.pairs.len(),
            )
        })
        .collect();
    plans.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let (plan_s, plan_domains, plan_pairs) = plans[1];
    println!(
        "block plan: {plan_domains} domains, {plan_pairs} (destination, app) pairs for {} apps in {plan_s:.3}s (median of 3)",
        apps.len()
    );
    drop(blocking);
    // Issue 16, item 10: 1,000,000 rules of which half are exceptions (was quadratic).
    let exc = dir.join("with-exceptions.txt");
    let mut text = String::with_capacity(N * 30);
    for i in 0..N / 2 {
        text.push_str(&format!("||t{i}.track{}.example{}.com^\n", i % 997, i % 13));
        text.push_str(&format!(
            "@@||e{i}.track{}.example{}.com^\n",
            i % 997,
            i % 13
        ));
    }
    std::fs::write(&exc, &text).unwrap();
    drop(text);
    let spec_exc: ImportSpec = format!("adblock:{}:ad-attribution", exc.display())
        .parse()
        .unwrap();
    let mut exc_loads: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let p = Policy::resolve(files(), std::slice::from_ref(&spec_exc)).unwrap();
            black_box(p);
            start.elapsed().as_secs_f64()
        })
        .collect();
    exc_loads.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "policy: {} rules + {} exceptions loaded in {:.3}s (median of 3)",
        N / 2,
        N / 2,
        exc_loads[1]
    );
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    let out = json!({
        "domains": domains,
        "load_seconds_median": loads[1],
        "load_seconds": loads,
        "load_seconds_half_exceptions_median": exc_loads[1],
        "lookup_ns": ns_per,
        "block_plan_seconds_median": plan_s,
        "block_plan_domains": plan_domains,
        "block_plan_pairs": plan_pairs,
        "lookups_per_s": 1e9 / ns_per,
        "process_rss_mib_with_list": rss_kb.map(|k| k as f64 / 1024.0),
        "targets": {"load_seconds": 1.0, "lookup_ns": 1000.0},
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/policy.json".into());
    if let Some(d) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(d);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("wrote {path}");
    std::fs::remove_dir_all(&dir).ok();
}
