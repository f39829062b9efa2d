//! How the guest init starts the agent: whether to, and with which flags,
//! from the kernel command line.

use crate::cmdline::param;

/// Where the initramfs installs the agent.
pub const AGENT_PATH: &str = "/bin/memtide-agent";
/// `memtide.agent=0` (or `off`) keeps the init from starting the agent.
pub const AGENT_PARAM: &str = "memtide.agent";
/// `memtide.agent_port=P` becomes the agent's `--port P`.
pub const PORT_PARAM: &str = "memtide.agent_port";
/// `memtide.agent_interval_ms=N` becomes the agent's `--interval-ms N`.
pub const INTERVAL_PARAM: &str = "memtide.agent_interval_ms";

/// Linux's virtio device id of a vsock device (`VIRTIO_ID_VSOCK`).
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Where Linux lists virtio devices, one directory each with a `device`
/// file holding the id (`0x0013`).
pub const VIRTIO_DEVICES_DIR: &str = "/sys/bus/virtio/devices";

/// Whether the text of a virtio device's sysfs `device` file names a vsock
/// device.
pub fn is_vsock_device(id_text: &str) -> bool {
    let id = id_text.trim();
    let id = id
        .strip_prefix("0x")
        .map_or_else(|| id.parse().ok(), |hex| u32::from_str_radix(hex, 16).ok());
    id == Some(VIRTIO_ID_VSOCK)
}

/// Whether the guest has a virtio-vsock device (without one the agent has
/// nobody to report to, and on the nested host its sampling took more than
/// half of a small guest's CPU: `docs/nested-host.md`).
pub fn vsock_device_present() -> bool {
    let Ok(entries) = std::fs::read_dir(VIRTIO_DEVICES_DIR) else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("device")).is_ok_and(|t| is_vsock_device(&t))
    })
}

/// The agent's arguments for this kernel command line, or `None` when the
/// command line turns the agent off. Values are passed through unchecked;
/// the agent refuses bad ones with a message.
pub fn agent_args(cmdline: &str) -> Option<Vec<String>> {
    if matches!(param(cmdline, AGENT_PARAM).as_deref(), Some("0" | "off")) {
        return None;
    }
    let mut args = Vec::new();
    for (key, flag) in [(PORT_PARAM, "--port"), (INTERVAL_PARAM, "--interval-ms")] {
        if let Some(value) = param(cmdline, key) {
            args.push(flag.to_string());
            args.push(value);
        }
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_vsock_device_id_counts() {
        assert!(is_vsock_device("0x0013\n"));
        assert!(is_vsock_device("19"));
        for other in ["0x0005\n", "0x0018", "0x13x", "", "vsock"] {
            assert!(!is_vsock_device(other), "{other:?}");
        }
    }

    #[test]
    fn on_by_default_with_no_flags() {
        assert_eq!(agent_args("console=ttyS0"), Some(vec![]));
        assert_eq!(agent_args("memtide.agent=1"), Some(vec![]));
    }

    #[test]
    fn turned_off() {
        assert_eq!(agent_args("memtide.agent=0 quiet"), None);
        assert_eq!(agent_args("memtide.agent=off"), None);
    }

    #[test]
    fn port_and_interval_pass_through() {
        assert_eq!(
            agent_args(
                "memtide.agent_interval_ms=1000 memtide.cmd=\"x y\" memtide.agent_port=6000"
            ),
            Some(vec![
                "--port".to_string(),
                "6000".to_string(),
                "--interval-ms".to_string(),
                "1000".to_string()
            ])
        );
    }
}
