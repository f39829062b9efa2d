//! `memtide-guest`: the static multi-call binary of the guest programs
//! (init, memory agent, memory hog), chosen by the name it runs as; see
//! [`memtide_guest::programs`].

use std::process::ExitCode;

use memtide_guest::programs::{dispatch, usage, Dispatch};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match dispatch(&argv) {
        Dispatch::Run(program, skip) => program.run(argv.into_iter().skip(skip)),
        Dispatch::Unknown => {
            memtide_guest::err_line!("{}", usage());
            ExitCode::from(2)
        }
    }
}
