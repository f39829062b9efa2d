//! `memtide top`: a live terminal view of a balancer (`GET /balancer`),
//! redrawn every interval: the budget, and per VM assigned, demand,
//! committed memory, pressure, balloon, plugged memory and the last
//! decision.

use std::path::Path;
use std::time::Duration;

use crate::ctl::{call, CtlError};

/// Errors of `memtide top`.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The API could not be reached or refused.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// The answer was not the balancer's JSON.
    #[error("unexpected answer from GET /balancer: {0}")]
    Json(#[from] serde_json::Error),
}

/// Renders one screen from a `GET /balancer` answer.
pub fn render(v: &serde_json::Value) -> String {
    let num = |x: &serde_json::Value| {
        x.as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    let mut out = format!(
        "memtide top: budget {} MiB, assigned {} MiB, {} ticks\n\n{:<10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}  last decision\n",
        num(&v["budget_mib"]),
        num(&v["assigned_total_mib"]),
        num(&v["ticks"]),
        "VM",
        "assigned",
        "demand",
        "committed",
        "pressure",
        "balloon",
        "plugged",
    );
    for vm in v["vms"].as_array().into_iter().flatten() {
        let pressure = vm["pressure_pct"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |p| format!("{p}%"));
        let error = vm["last_error"]
            .as_str()
            .map(|e| format!(" [error: {e}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}  {}{}\n",
            vm["name"].as_str().unwrap_or("?"),
            num(&vm["assigned_mib"]),
            num(&vm["demand_mib"]),
            num(&vm["committed_mib"]),
            pressure,
            num(&vm["balloon_mib"]),
            num(&vm["plugged_mib"]),
            vm["reason"].as_str().unwrap_or(""),
            error,
        ));
    }
    out
}

/// Shows the balancer behind `sock` every `interval`; once with `once`.
pub fn run(sock: &Path, interval: Duration, once: bool) -> Result<(), TopError> {
    loop {
        let body = call(sock, "GET", "/balancer", "")?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let screen = render(&v);
        if once {
            print!("{screen}");
            return Ok(());
        }
        // Clear the screen and go home, then draw.
        print!("\x1b[2J\x1b[H{screen}");
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_vm_with_missing_values_as_dashes() {
        let v = serde_json::json!({
            "budget_mib": 1024, "assigned_total_mib": 900, "ticks": 7,
            "vms": [
                {"name": "a", "assigned_mib": 600, "demand_mib": 640, "committed_mib": 533,
                 "pressure_pct": 88, "balloon_mib": 0, "plugged_mib": 640,
                 "reason": "vm a: deflate 40 MiB", "last_error": null},
                {"name": "b", "assigned_mib": 300, "demand_mib": 300, "committed_mib": null,
                 "pressure_pct": null, "balloon_mib": 212, "plugged_mib": 512,
                 "reason": "vm b: no recent report", "last_error": "no balloon"}
            ]
        });
        let s = render(&v);
        assert!(
            s.contains("budget 1024 MiB, assigned 900 MiB, 7 ticks"),
            "{s}"
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 5, "{s}");
        assert!(
            lines[3].starts_with("a ") && lines[3].contains("88%"),
            "{s}"
        );
        assert!(
            lines[4].contains(" - ") && lines[4].contains("[error: no balloon]"),
            "{s}"
        );
    }
}
