//! What `covobs watch` costs a target that makes many syscalls and signals: the target's
//! throughput unobserved, watched by covobs, and unwatched while covobs watches another process
//! (the price every process pays for the system-wide tracepoints).
use std::time::Duration;

use anyhow::Result;

use super::{Observer, Workload, median, save};

const SECS: f64 = 3.0;
const ROUNDS: usize = 3;

fn once(mode: &str, observe: Option<&str>) -> Result<f64> {
    let w = Workload::start("bench-target", mode, SECS)?;
    let pid = w.pid().to_string();
    let mut other = None;
    let observer = match observe {
        Some("target") => Some(Observer::start(&["watch", "--pid", &pid, "--json"])?),
        Some("other") => {
            // covobs watching an unrelated idle process.
            let sleeper = std::process::Command::new("sleep").arg("600").spawn()?;
            let o = Observer::start(&["watch", "--pid", &sleeper.id().to_string(), "--json"])?;
            other = Some(sleeper);
            Some(o)
        }
        _ => None,
    };
    if let Some(o) = &observer {
        o.wait_for("target", Duration::from_secs(30))?;
    }
    let ops = w.go(SECS)?;
    if let Some(mut o) = observer {
        o.stop();
    }
    if let Some(mut s) = other {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(ops)
}

pub fn run() -> Result<()> {
    println!(
        "\n== watch: throughput of bench-target (ops/s, median of {ROUNDS} x {SECS}s, interleaved)"
    );
    let mut results = serde_json::Map::new();
    for mode in ["syscalls-signals", "cpu"] {
        let (mut base, mut watched, mut other) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            base.push(once(mode, None)?);
            watched.push(once(mode, Some("target"))?);
            other.push(once(mode, Some("other"))?);
        }
        let (b, w, o) = (median(&mut base), median(&mut watched), median(&mut other));
        println!(
            "  {mode:<17} unobserved {b:>12.0}   watched {w:>12.0} (ratio {:.3})   covobs watching another process {o:>12.0} (ratio {:.3})",
            w / b,
            o / b
        );
        results.insert(
            mode.to_owned(),
            serde_json::json!({
                "unobserved_ops_per_sec": b, "watched_ops_per_sec": w, "watched_ratio": w / b,
                "unrelated_ops_per_sec": o, "unrelated_ratio": o / b,
                "runs": {"unobserved": base, "watched": watched, "unrelated": other},
            }),
        );
    }
    save("watch", &serde_json::Value::Object(results))
}
