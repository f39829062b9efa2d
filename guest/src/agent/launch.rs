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
