//! Time since boot, from `/proc/uptime` (`"<up> <idle>\n"`, in seconds).

/// Why the uptime could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UptimeError {
    /// The file could not be read (proc not mounted?).
    #[error("/proc/uptime: {0}")]
    Read(#[from] std::io::Error),
    /// The file did not start with a number.
    #[error("/proc/uptime: unexpected contents {0:?}")]
    Parse(String),
}

/// The first field of `/proc/uptime` contents, in seconds.
pub fn parse(text: &str) -> Result<f64, UptimeError> {
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|u| u.is_finite() && *u >= 0.0)
        .ok_or_else(|| UptimeError::Parse(text.to_string()))
}

/// The file.
pub const PATH: &str = "/proc/uptime";

/// Seconds since boot.
pub fn read() -> Result<f64, UptimeError> {
    parse(&std::fs::read_to_string(PATH)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_field() {
        let up = parse("12.34 20.00\n").expect("valid");
        assert!((up - 12.34).abs() < 1e-9);
        assert_eq!(format!("{up:.2}"), "12.34");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("abc 1.0").is_err());
        assert!(parse("-1.0 0").is_err());
    }
}
