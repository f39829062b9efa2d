//! The guest programs, one module each, built into one static multi-call
//! binary (`src/main.rs`) that picks the program by the name it was run
//! as: the initramfs holds the binary once, as `/init`, and the other
//! names as symbolic links to it (`docs/guest-image.md`).

pub mod agent;
pub mod committed;
pub mod hog;
pub mod init;
pub mod pinned;

use std::process::ExitCode;

/// The name the binary has under its own name (`memtide-guest PROGRAM
/// [ARGS...]` runs PROGRAM).
pub const MULTI_CALL_NAME: &str = "memtide-guest";

/// One program of the multi-call binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// PID 1 ([`init`]): as `/init` or `memtide-init`.
    Init,
    /// The memory agent ([`agent`]): `memtide-agent`.
    Agent,
    /// The memory workload ([`hog`]): `memtide-hog`.
    Hog,
}

/// Every program and the names it answers to.
const NAMES: &[(&str, Program)] = &[
    ("init", Program::Init),
    ("memtide-init", Program::Init),
    ("memtide-agent", Program::Agent),
    ("memtide-hog", Program::Hog),
];

impl Program {
    /// The program called `name` (a path's last component counts), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let base = name.rsplit('/').next().unwrap_or(name);
        NAMES.iter().find(|(n, _)| *n == base).map(|&(_, p)| p)
    }

    /// Runs the program with `args` (the arguments after its name).
    pub fn run(self, args: impl Iterator<Item = String>) -> ExitCode {
        match self {
            Self::Init => init::main(args),
            Self::Agent => agent::main(args),
            Self::Hog => hog::main(args),
        }
    }
}

/// What a command line (`argv`, program name first) asks for: the program
/// and how many leading arguments name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Run the program after skipping that many arguments.
    Run(Program, usize),
    /// No known program: print [`usage`] and fail.
    Unknown,
}

/// Picks the program from `argv[0]`, or from `argv[1]` when the binary runs
/// under its own name ([`MULTI_CALL_NAME`]).
pub fn dispatch(argv: &[String]) -> Dispatch {
    let Some(first) = argv.first() else {
        return Dispatch::Unknown;
    };
    if let Some(p) = Program::from_name(first) {
        return Dispatch::Run(p, 1);
    }
    let base = first.rsplit('/').next().unwrap_or(first);
    if base == MULTI_CALL_NAME {
        if let Some(p) = argv.get(1).and_then(|a| Program::from_name(a)) {
            return Dispatch::Run(p, 2);
        }
    }
    Dispatch::Unknown
}

/// The usage line printed for an unknown program name.
pub fn usage() -> String {
    let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
    format!(
        "usage: {MULTI_CALL_NAME} PROGRAM [ARGS...], or run it as PROGRAM (a link); \
         programs: {}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_program_by_the_name_it_runs_as() {
        assert_eq!(dispatch(&argv(&["/init"])), Dispatch::Run(Program::Init, 1));
        assert_eq!(
            dispatch(&argv(&["/bin/memtide-agent", "--once"])),
            Dispatch::Run(Program::Agent, 1)
        );
        assert_eq!(
            dispatch(&argv(&["memtide-hog", "1:1"])),
            Dispatch::Run(Program::Hog, 1)
        );
        assert_eq!(
            dispatch(&argv(&["memtide-init"])),
            Dispatch::Run(Program::Init, 1)
        );
    }

    #[test]
    fn under_its_own_name_the_first_argument_names_the_program() {
        assert_eq!(
            dispatch(&argv(&["/bin/memtide-guest", "memtide-hog", "1:1"])),
            Dispatch::Run(Program::Hog, 2)
        );
        assert_eq!(dispatch(&argv(&["memtide-guest"])), Dispatch::Unknown);
        assert_eq!(dispatch(&argv(&["memtide-guest", "sh"])), Dispatch::Unknown);
        assert_eq!(dispatch(&argv(&["sh"])), Dispatch::Unknown);
        assert_eq!(dispatch(&[]), Dispatch::Unknown);
    }

    #[test]
    fn usage_names_every_program() {
        let u = usage();
        for (name, _) in NAMES {
            assert!(u.contains(name), "{u}");
        }
    }
}
