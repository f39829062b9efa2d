//! A report as one line of JSON, for `memtide-agent --once` (written by
//! hand: serde_json would grow the static binary for one debug line).

use memtide_agent_proto::GuestReport;

/// `report` as a JSON object on one line, with the field names of
/// [`GuestReport`] (`"psi": null` when absent).
pub fn to_json(r: &GuestReport) -> String {
    let psi = match &r.psi {
        None => "null".to_string(),
        Some(p) => format!(
            "{{\"some_avg10_centi\":{},\"full_avg10_centi\":{},\"some_total_us\":{},\"full_total_us\":{}}}",
            p.some_avg10_centi, p.full_avg10_centi, p.some_total_us, p.full_total_us
        ),
    };
    format!(
        "{{\"seq\":{},\"uptime_ms\":{},\"mem_total_kib\":{},\"mem_free_kib\":{},\
         \"mem_available_kib\":{},\"committed_as_kib\":{},\"commit_limit_kib\":{},\
         \"swap_total_kib\":{},\"swap_free_kib\":{},\"psi\":{psi}}}",
        r.seq,
        r.uptime_ms,
        r.mem_total_kib,
        r.mem_free_kib,
        r.mem_available_kib,
        r.committed_as_kib,
        r.commit_limit_kib,
        r.swap_total_kib,
        r.swap_free_kib,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtide_agent_proto::MemoryPressure;

    #[test]
    fn parses_back_as_the_same_report() {
        for psi in [
            None,
            Some(MemoryPressure {
                some_avg10_centi: 1234,
                full_avg10_centi: 0,
                some_total_us: u64::MAX,
                full_total_us: 5,
            }),
        ] {
            let r = GuestReport {
                seq: 3,
                uptime_ms: 4567,
                mem_total_kib: 214_580,
                mem_free_kib: 176_412,
                mem_available_kib: 183_944,
                committed_as_kib: 9_428,
                commit_limit_kib: 107_288,
                swap_total_kib: 0,
                swap_free_kib: 0,
                psi,
            };
            let text = to_json(&r);
            assert!(!text.contains('\n'));
            let back: GuestReport = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(back, r);
        }
    }
}
