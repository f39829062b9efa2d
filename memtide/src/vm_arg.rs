//! One `memtide balance --vm` argument, parsed by clap in `cli.rs` and
//! used by the `balance` command and the demo.

use std::path::PathBuf;

/// One `--vm` argument: `SOCKET[,name=N][,weight=W][,min=MIB][,buffer=PCT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmArg {
    /// The VM's API socket.
    pub sock: PathBuf,
    /// Name in decisions (default: vm0, vm1, ...).
    pub name: Option<String>,
    /// Weight (default 5000).
    pub weight: Option<u32>,
    /// Minimum, MiB (default: half the boot memory).
    pub minimum_mib: Option<u64>,
    /// Buffer, percent (default 20).
    pub buffer_pct: Option<u32>,
}

impl std::str::FromStr for VmArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let sock = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("expected SOCKET[,name=N][,weight=W][,min=MIB][,buffer=PCT]")?;
        let mut arg = VmArg {
            sock: PathBuf::from(sock),
            name: None,
            weight: None,
            minimum_mib: None,
            buffer_pct: None,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?} is not a number"))
            };
            match key {
                "name" => arg.name = Some(value.to_string()),
                "weight" => arg.weight = Some(u32::try_from(number()?).map_err(|e| e.to_string())?),
                "min" => arg.minimum_mib = Some(number()?),
                "buffer" => {
                    arg.buffer_pct = Some(u32::try_from(number()?).map_err(|e| e.to_string())?)
                }
                _ => return Err(format!("unknown key {key:?} (name, weight, min, buffer)")),
            }
        }
        Ok(arg)
    }
}
