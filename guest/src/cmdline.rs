//! Reading parameters from the kernel command line (`/proc/cmdline`).
//!
//! The kernel keeps double quotes in `/proc/cmdline`, so a value with spaces
//! arrives as `memtide.cmd="cat /proc/meminfo"`.

/// The parameter that carries the command the init runs.
pub const CMD_PARAM: &str = "memtide.cmd";

/// Splits a command line into `key=value` / `flag` words, honouring double
/// quotes the way the kernel's parser does (quotes group, then are dropped).
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The value of the last `key=value` for `key`, if present.
pub fn param(cmdline: &str, key: &str) -> Option<String> {
    words(cmdline)
        .into_iter()
        .filter_map(|w| {
            w.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_value_with_spaces() {
        let line = "console=ttyS0 memtide.cmd=\"cat /proc/meminfo\" quiet\n";
        assert_eq!(param(line, CMD_PARAM).as_deref(), Some("cat /proc/meminfo"));
    }

    #[test]
    fn unquoted_value_and_absent_key() {
        assert_eq!(
            param("a=1 memtide.cmd=uptime b", CMD_PARAM).as_deref(),
            Some("uptime")
        );
        assert_eq!(param("a=1 memtide.cmdx=no", CMD_PARAM), None);
        assert_eq!(param("", CMD_PARAM), None);
    }

    #[test]
    fn last_occurrence_wins_and_empty_value_is_kept() {
        assert_eq!(
            param("memtide.cmd=a memtide.cmd=\"b c\"", CMD_PARAM).as_deref(),
            Some("b c")
        );
        assert_eq!(param("memtide.cmd=\"\"", CMD_PARAM).as_deref(), Some(""));
    }

    #[test]
    fn words_split_like_the_kernel() {
        assert_eq!(
            words("  a \"b c\"d  e=\"f g\" "),
            vec!["a", "b cd", "e=f g"]
        );
    }
}
