//! Whole lines on the guest console. Rust's stderr is unbuffered, so
//! `eprintln!` may issue one `write` per formatted piece, and another
//! process writing to the same console (the `--cmd` command, say) can land
//! in the middle of a line. [`err_line!`](crate::err_line) formats the line
//! first and writes it, newline included, with one `write`.

use std::io::Write;

/// Writes `line` and a newline to stderr in one `write` call (errors are
/// ignored: the console is the only place to report them).
pub fn write_err_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// `eprintln!` that writes the whole line with one `write`.
#[macro_export]
macro_rules! err_line {
    ($($arg:tt)*) => {
        $crate::console::write_err_line(&format!($($arg)*))
    };
}
