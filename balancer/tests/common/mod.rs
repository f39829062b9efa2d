//! Demand-curve strategies shared by the balancer's property tests.

use memtide_balancer::sim::Curve;
use proptest::prelude::*;

/// Curves that settle within 60 s: constant, idle, one step, one ramp
/// (demand between 64 MiB and 3 GB).
pub fn settling_curve() -> impl Strategy<Value = Curve> {
    prop_oneof![
        (64u64..3000).prop_map(Curve::Constant),
        Just(Curve::Idle),
        (0u64..60_000, 64u64..3000, 64u64..3000).prop_map(|(at_ms, before, after)| Curve::Step {
            at_ms,
            before,
            after
        }),
        (64u64..3000, 64u64..3000, 1u64..60_000).prop_map(|(from, to, over_ms)| Curve::Ramp {
            from,
            to,
            over_ms
        }),
    ]
}

/// Every kind of curve: the settling ones, a sine and a noisy level.
#[allow(dead_code, reason = "not every test binary that includes this uses it")]
pub fn any_curve() -> impl Strategy<Value = Curve> {
    prop_oneof![
        settling_curve(),
        (64u64..3000, 0u64..1500, 2_000u64..60_000).prop_map(|(base, amplitude, period_ms)| {
            Curve::Sine {
                base,
                amplitude,
                period_ms,
            }
        }),
        (64u64..3000, 0u64..20, any::<u64>()).prop_map(|(base, pct, seed)| Curve::Noisy {
            base,
            pct,
            seed
        }),
    ]
}
