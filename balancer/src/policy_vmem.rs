//! The steps of [`Balancer`] that only VMs with virtio-mem take, besides
//! growing by plug and shrinking by unplug: ballooning what an unplug could
//! not take, and turning balloon back into unplugged blocks later; and the
//! reasons' wording for the mechanism chosen.

use super::Balancer;
use crate::action::{Action, Decision};
use crate::resize::pressure_pct;
use crate::settings::VirtioMemSettings;
use crate::share::Need;
use crate::vmem::{convertible_mib, VmemGrowth, VmemShrink};

impl Balancer {
    /// VM `i`'s last unplug came up short by `short_mib` (the device still
    /// has that much more plugged than requested, `vmem_settle_ms` after
    /// the request): ask for what is plugged, so the guest stops trying,
    /// and inflate the balloon by the shortfall instead. The VM's assigned
    /// memory stays what the balancer decided.
    pub(super) fn balloon_the_shortfall(
        &mut self,
        i: usize,
        short_mib: u64,
        need: &Need,
        now_ms: u64,
    ) -> Decision {
        let cfg = self.cfg;
        let v = &mut self.vms[i];
        let before = v.state.assigned_mib();
        let (requested, plugged) = v.state.request_what_is_plugged(now_ms);
        v.state.vmem_retry_after_ms = Some(now_ms.saturating_add(cfg.vmem_retry_ms));
        v.state.balloon_mib = v.state.balloon_mib.saturating_add(short_mib);
        Decision {
            vm: i,
            target_mib: need.target,
            assigned_before_mib: before,
            assigned_after_mib: v.state.assigned_mib(),
            actions: vec![
                Action::KeepPlugged {
                    to_requested_mib: plugged,
                },
                Action::Inflate {
                    to_balloon_mib: v.state.balloon_mib,
                },
            ],
            over_budget_mib: 0,
            reason: format!(
                "vm {}: balloon {short_mib} MiB: unplug left {short_mib} MiB plugged \
                 (the guest could not free those blocks: {plugged} MiB plugged of {requested} MiB \
                 requested after {} s); virtio-mem asked for the {plugged} MiB plugged",
                v.settings.name,
                cfg.vmem_settle_ms / 1000
            ),
        }
    }

    /// VM `i`'s last plug came up short (the device has less plugged than
    /// requested `vmem_settle_ms` after the request): ask for what is
    /// plugged and count only that; a later step plugs again if the VM
    /// still needs it.
    pub(super) fn count_what_was_plugged(
        &mut self,
        i: usize,
        need: &Need,
        now_ms: u64,
    ) -> Decision {
        let v = &mut self.vms[i];
        let before = v.state.assigned_mib();
        let (requested, plugged) = v.state.request_what_is_plugged(now_ms);
        Decision {
            vm: i,
            target_mib: need.target,
            assigned_before_mib: before,
            assigned_after_mib: v.state.assigned_mib(),
            actions: vec![Action::KeepPlugged {
                to_requested_mib: plugged,
            }],
            over_budget_mib: 0,
            reason: format!(
                "vm {}: plug came up short: {plugged} MiB plugged of {requested} MiB requested \
                 after {} s (virtio-mem); counts the {plugged} MiB plugged",
                v.settings.name,
                self.cfg.vmem_settle_ms / 1000
            ),
        }
    }

    /// Balloon to unplug: VM `i` has balloon and plugged blocks, no
    /// request in flight and no recent failed unplug, and is not under
    /// pressure (the caller checks that): unplug whole blocks worth of the
    /// balloon and deflate it as much, so that its assigned memory stays
    /// and the memory really leaves the guest. `None` when there is
    /// nothing to convert.
    pub(super) fn convert_balloon(
        &mut self,
        i: usize,
        need: &Need,
        now_ms: u64,
    ) -> Option<Decision> {
        let cfg = self.cfg;
        let v = self.vms.get_mut(i)?;
        let dev = v.settings.virtio_mem?;
        let st = v.state;
        let waiting = st.vmem_retry_after_ms.is_some_and(|t| now_ms < t)
            || st.vmem_plugged_mib != st.vmem_requested_mib
            || st
                .last_change_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < cfg.min_interval_ms);
        let c = convertible_mib(&dev, st.vmem_requested_mib, st.balloon_mib);
        if waiting || c == 0 || c < cfg.hysteresis_mib {
            return None;
        }
        let assigned = st.assigned_mib();
        v.state.vmem_requested_mib -= c;
        v.state.vmem_moved_at_ms = Some(now_ms);
        v.state.balloon_mib -= c;
        v.state.last_change_ms = Some(now_ms);
        Some(Decision {
            vm: i,
            target_mib: need.target,
            assigned_before_mib: assigned,
            assigned_after_mib: v.state.assigned_mib(),
            actions: vec![
                Action::Unplug {
                    to_requested_mib: v.state.vmem_requested_mib,
                },
                Action::Deflate {
                    to_balloon_mib: v.state.balloon_mib,
                },
            ],
            over_budget_mib: 0,
            reason: format!(
                "vm {}: unplug {c} MiB (virtio-mem) in place of {c} MiB of balloon: whole \
                 blocks can go and the guest is not under pressure (pressure {}, target {} MiB); \
                 assigned stays {assigned} MiB",
                v.settings.name,
                pressure_pct(need.committed, assigned),
                need.target
            ),
        })
    }
}

/// How a virtio-mem VM grows, for the reason.
pub(super) fn vmem_growth_text(dev: &VirtioMemSettings, g: &VmemGrowth) -> String {
    let mut parts = Vec::new();
    if g.from_balloon_mib > 0 {
        parts.push(format!(
            "deflate {} MiB (the balloon first)",
            g.from_balloon_mib
        ));
    }
    if g.plug_mib > 0 {
        parts.push(format!(
            "plug {} MiB (virtio-mem): {} MiB blocks, no slot overshoot",
            g.plug_mib, dev.block_mib
        ));
    }
    if g.slots > 0 {
        parts.push(format!(
            "{} slot(s) hot-added: the virtio-mem region is full",
            g.slots
        ));
    }
    parts.join(", ")
}

/// How a virtio-mem VM shrinks, for the reason.
pub(super) fn vmem_shrink_text(
    dev: &VirtioMemSettings,
    requested_mib: u64,
    split: VmemShrink,
) -> String {
    let mut parts = Vec::new();
    if split.unplug_mib > 0 {
        parts.push(format!(
            "unplug {} MiB (virtio-mem): whole {} MiB blocks leave the guest",
            split.unplug_mib, dev.block_mib
        ));
    }
    if split.inflate_mib > 0 {
        let why = if requested_mib == 0 {
            "nothing plugged by virtio-mem to unplug".to_string()
        } else if split.unplug_mib >= dev.floor_blocks(requested_mib) {
            format!("only {requested_mib} MiB plugged by virtio-mem")
        } else {
            format!("less than a {} MiB block", dev.block_mib)
        };
        parts.push(format!("balloon {} MiB: {why}", split.inflate_mib));
    }
    parts.join(", ")
}
