//! `memtide top`: a live terminal view of a balancer (`GET /balancer`),
//! redrawn every interval: the budget, and per VM assigned, demand,
//! committed memory, pressure, balloon, plugged memory and the last
//! decision.

use std::path::Path;
use std::time::Duration;

use memtide_api::{BalancerStatus, Client, ClientError};

/// Errors of `memtide top`.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The API could not be reached, refused, or answered something that
    /// is not the balancer's status.
    #[error(transparent)]
    Api(#[from] ClientError),
}

/// Renders one screen from a `GET /balancer` answer.
pub fn render(v: &BalancerStatus) -> String {
    let opt = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut out = format!(
        "memtide top: budget {} MiB, assigned {} MiB, {} ticks\n\n{:<10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}  last decision\n",
        v.budget_mib,
        v.assigned_total_mib,
        v.ticks,
        "VM",
        "assigned",
        "demand",
        "committed",
        "pressure",
        "balloon",
        "plugged",
    );
    for vm in &v.vms {
        let pressure = vm
            .pressure_pct
            .map_or_else(|| "-".to_string(), |p| format!("{p}%"));
        let error = vm
            .last_error
            .as_ref()
            .map(|e| format!(" [error: {e}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}  {}{}\n",
            vm.name,
            vm.assigned_mib,
            vm.demand_mib,
            opt(vm.committed_mib),
            pressure,
            vm.balloon_mib,
            vm.plugged_mib + vm.virtio_mem_mib,
            vm.reason,
            error,
        ));
    }
    out
}

/// Shows the balancer behind `sock` every `interval`; once with `once`.
pub fn run(sock: &Path, interval: Duration, once: bool) -> Result<(), TopError> {
    let client = Client::new(sock);
    loop {
        let screen = render(&client.get_balancer()?);
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
    fn a_renamed_field_is_an_error_not_a_dash() {
        let v = serde_json::json!({"budget": 1, "assigned_total_mib": 0, "ticks": 0, "vms": []});
        assert!(serde_json::from_value::<BalancerStatus>(v).is_err());
    }

    #[test]
    fn renders_one_line_per_vm_with_missing_values_as_dashes() {
        let v = serde_json::json!({
            "budget_mib": 1024, "assigned_total_mib": 900, "ticks": 7,
            "vms": [
                {"name": "a", "assigned_mib": 600, "demand_mib": 640, "committed_mib": 533,
                 "pressure_pct": 88, "balloon_mib": 0, "plugged_mib": 640,
                 "reason": "vm a: deflate 40 MiB", "last_action": null, "last_error": null},
                {"name": "b", "assigned_mib": 300, "demand_mib": 300, "committed_mib": null,
                 "pressure_pct": null, "balloon_mib": 212, "plugged_mib": 512,
                 "reason": "vm b: no recent report", "last_action": null, "last_error": "no balloon"}
            ]
        });
        let v: BalancerStatus = serde_json::from_value(v).expect("a balancer status");
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
