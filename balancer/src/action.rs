//! What the balancer decides for a VM: resize actions and a reason.

/// One step towards a VM's new size. A decision with no actions leaves the
/// VM as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Shrink the balloon to this size (the guest gets memory back), MiB.
    Deflate {
        /// New balloon size.
        to_balloon_mib: u64,
    },
    /// Grow the balloon to this size (the guest gives memory up), MiB.
    Inflate {
        /// New balloon size.
        to_balloon_mib: u64,
    },
    /// Hot-add memory slots (never undone: there is no hot-remove).
    HotAdd {
        /// How many.
        slots: u32,
        /// MiB each.
        slot_mib: u64,
    },
    /// virtio-mem: raise the device's requested size to this, MiB (the
    /// guest plugs blocks and its MemTotal grows).
    Plug {
        /// New requested size.
        to_requested_mib: u64,
    },
    /// virtio-mem: lower the device's requested size to this, MiB (the
    /// guest unplugs blocks; they leave its MemTotal and the host).
    Unplug {
        /// New requested size.
        to_requested_mib: u64,
    },
    /// virtio-mem: set the requested size to what the guest could not
    /// unplug, so that it stops trying; the balloon takes the rest.
    KeepPlugged {
        /// New requested size (the device's plugged size).
        to_requested_mib: u64,
    },
}

impl Action {
    /// The virtio-mem requested size this action sets, if it is a
    /// virtio-mem action.
    pub fn virtio_mem_requested_mib(&self) -> Option<u64> {
        match *self {
            Action::Plug { to_requested_mib }
            | Action::Unplug { to_requested_mib }
            | Action::KeepPlugged { to_requested_mib } => Some(to_requested_mib),
            Action::Deflate { .. } | Action::Inflate { .. } | Action::HotAdd { .. } => None,
        }
    }
}

/// What the balancer decided for one VM in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of the VM.
    pub vm: usize,
    /// The VM's target (demand), MiB, or its current size if its report was
    /// not used.
    pub target_mib: u64,
    /// Memory before the step, MiB.
    pub assigned_before_mib: u64,
    /// Memory after the step, MiB.
    pub assigned_after_mib: u64,
    /// Actions to apply, in order; empty means "no change".
    pub actions: Vec<Action>,
    /// How far the VMs together are above the budget after this step, MiB
    /// (the same in every decision of a step; 0 when within budget). Only
    /// non-zero in the documented slack cases (see `docs/balancer.md`).
    pub over_budget_mib: u64,
    /// Why, for people.
    pub reason: String,
}

impl Decision {
    /// Whether the decision leaves the VM as it is.
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The actions that take a VM from balloon `old_balloon_mib` to
/// `new_balloon_mib` after hot-adding `slots` slots of `slot_mib`:
/// hot-add first (so the guest has the memory before the balloon moves),
/// then the balloon change, if any.
pub fn resize_actions(
    old_balloon_mib: u64,
    new_balloon_mib: u64,
    slots: u32,
    slot_mib: u64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if slots > 0 {
        actions.push(Action::HotAdd { slots, slot_mib });
    }
    if new_balloon_mib < old_balloon_mib {
        actions.push(Action::Deflate {
            to_balloon_mib: new_balloon_mib,
        });
    } else if new_balloon_mib > old_balloon_mib {
        actions.push(Action::Inflate {
            to_balloon_mib: new_balloon_mib,
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_add_comes_before_the_balloon() {
        assert_eq!(resize_actions(100, 100, 0, 128), vec![]);
        assert_eq!(
            resize_actions(100, 40, 0, 128),
            vec![Action::Deflate { to_balloon_mib: 40 }]
        );
        assert_eq!(
            resize_actions(0, 28, 1, 128),
            vec![
                Action::HotAdd {
                    slots: 1,
                    slot_mib: 128
                },
                Action::Inflate { to_balloon_mib: 28 }
            ]
        );
        assert_eq!(
            resize_actions(200, 48, 2, 128),
            vec![
                Action::HotAdd {
                    slots: 2,
                    slot_mib: 128
                },
                Action::Deflate { to_balloon_mib: 48 }
            ]
        );
    }
}
