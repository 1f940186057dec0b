//! Policy matcher benchmarks (run by `cargo xtask bench`): load time of a 1,000,000-domain
//! list and look-ups per second. Output JSON at `$BW_BENCH_OUT` (default
//! bench-results/policy.json).

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    time::Instant,
};

use brokerwatch::policy::{file, ImportSpec, Policy, BUILTIN};
use serde_json::json;

const N: usize = 1_000_000;

/// The built-in policy files, parsed.
fn builtin_files() -> Vec<file::PolicyFile> {
    BUILTIN
        .iter()
        .map(|(n, t)| file::parse(n, t).unwrap())
        .collect()
}

/// An ad-attribution import of the adblock list at `list`.
fn import(list: &Path) -> ImportSpec {
    format!("adblock:{}:ad-attribution", list.display())
        .parse()
        .unwrap()
}

/// Writes the 1,000,000-domain adblock list in `dir`.
fn write_million(dir: &Path) -> PathBuf {
    let list = dir.join("million.txt");
    let mut text = String::with_capacity(N * 28);
    for i in 0..N {
        // Realistic shapes: a label or two under a registrable domain.
        text.push_str(&format!("||t{i}.track{}.example{}.com^\n", i % 997, i % 13));
    }
    std::fs::write(&list, &text).unwrap();
    list
}

/// The policy with the list, and how long loading it took.
struct Loaded {
    policy: Policy,
    /// Domains in the matcher.
    domains: usize,
    /// Seconds per load, sorted (three loads).
    loads: Vec<f64>,
}

/// Loads the built-in policies with `spec` three times, timing each.
fn load(spec: &ImportSpec) -> Loaded {
    let mut loads = Vec::new();
    let mut policy = None;
    for _ in 0..3 {
        let start = Instant::now();
        let p = Policy::resolve(builtin_files(), std::slice::from_ref(spec)).unwrap();
        loads.push(start.elapsed().as_secs_f64());
        policy = Some(p);
    }
    let policy = policy.unwrap();
    let (domains, _, _) = policy.matcher_counts();
    loads.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Loaded {
        policy,
        domains,
        loads,
    }
}

/// Look-ups: hits deep in the list, hits in the built-in list, and misses; ns per look-up.
fn lookups(policy: &Policy) -> f64 {
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
    assert_eq!(
        hits,
        rounds * (names.len() - names.len() / 3),
        "every hit found, no miss matched"
    );
    secs * 1e9 / lookups
}

/// A block plan computed: the median of three, and its size.
struct BlockPlan {
    seconds: f64,
    domains: usize,
    pairs: usize,
}

/// Issue 15: the block plan for every meeting app when a rule blocks the whole list's
/// category (what the daemon computes at every reload); prints it.
fn block_plan(spec: &ImportSpec) -> BlockPlan {
    let mut with_block = builtin_files();
    with_block.push(
        file::parse(
            "block.toml",
            "[[rule]]\nid = \"b\"\napps = \"meeting\"\ncategory = \"ad-attribution\"\nseverity = \"medium\"\naction = \"block\"\n",
        )
        .unwrap(),
    );
    let blocking = Policy::resolve(with_block, std::slice::from_ref(spec)).unwrap();
    let apps: Vec<_> = blocking.apps.apps.iter().map(Some).collect();
    let mut plans: Vec<BlockPlan> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let plan = blocking.block_plan(&apps, &[]);
            BlockPlan {
                seconds: start.elapsed().as_secs_f64(),
                domains: plan.domains.len(),
                pairs: plan.pairs.len(),
            }
        })
        .collect();
    plans.sort_by(|a, b| a.seconds.partial_cmp(&b.seconds).unwrap());
    let median = plans.swap_remove(1);
    println!(
        "block plan: {} domains, {} (destination, app) pairs for {} apps in {:.3}s (median of 3)",
        median.domains,
        median.pairs,
        apps.len(),
        median.seconds
    );
    median
}

/// Issue 16, item 10: 1,000,000 rules of which half are exceptions (was quadratic); the
/// median of three loads in seconds, printed.
fn with_exceptions(dir: &Path) -> f64 {
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
    let spec_exc = import(&exc);
    let mut exc_loads: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let p = Policy::resolve(builtin_files(), std::slice::from_ref(&spec_exc)).unwrap();
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
    exc_loads[1]
}

/// This process's resident memory in KiB.
fn rss_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bw-policy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = import(&write_million(&dir));
    let loaded = load(&spec);
    let ns_per = lookups(&loaded.policy);
    let loads = &loaded.loads;
    println!(
        "policy: {} domains loaded in {:.3}s (median of 3, min {:.3}s); lookup {:.0} ns ({:.2} M lookups/s)",
        loaded.domains,
        loads[1],
        loads[0],
        ns_per,
        1e3 / ns_per
    );
    let plan = block_plan(&spec);
    let exc_median = with_exceptions(&dir);
    // With the million-domain policy still loaded.
    let rss_kb = rss_kb();
    let out = json!({
        "domains": loaded.domains,
        "load_seconds_median": loads[1],
        "load_seconds": loads,
        "load_seconds_half_exceptions_median": exc_median,
        "lookup_ns": ns_per,
        "block_plan_seconds_median": plan.seconds,
        "block_plan_domains": plan.domains,
        "block_plan_pairs": plan.pairs,
        "lookups_per_s": 1e9 / ns_per,
        "process_rss_mib_with_list": rss_kb.map(|k| k as f64 / 1024.0),
        "targets": {"load_seconds": 1.0, "lookup_ns": 1000.0},
    });
    let path = std::env::var("BW_BENCH_OUT").unwrap_or_else(|_| "bench-results/policy.json".into());
    if let Some(d) = Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(d);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("wrote {path}");
    std::fs::remove_dir_all(&dir).ok();
}
