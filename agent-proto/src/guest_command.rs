//! Which guest commands (`memtide run --cmd`) need a shell. The init runs a
//! command with `/bin/sh -c` when the initramfs has one; the lean initramfs
//! has none (no busybox, `docs/guest-image.md`), and there the init runs a
//! *plain* command itself: words of ordinary characters separated by
//! spaces, no quoting, no expansion, no redirection, no `;` or `|`. The
//! host uses the same rule to pick the lean image when the command allows.

/// The programs of the lean initramfs a plain command may start (the
/// multi-call guest binary's names on `/bin`).
pub const LEAN_PROGRAMS: &[&str] = &["memtide-hog", "memtide-agent"];

/// The words of `cmd` if it is plain (runs the same with or without a
/// shell), else `None`. An empty command is not plain.
pub fn plain_words(cmd: &str) -> Option<Vec<&str>> {
    let ordinary = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
    if !cmd.chars().all(|c| c == ' ' || ordinary(c)) {
        return None;
    }
    let words: Vec<&str> = cmd.split(' ').filter(|w| !w.is_empty()).collect();
    // A word with `=` first would be a variable assignment to a shell.
    match words.first() {
        Some(first) if !first.contains('=') => Some(words),
        _ => None,
    }
}

/// Whether the lean initramfs (no shell) can run `cmd`: a plain command of
/// one of [`LEAN_PROGRAMS`], by name or by `/bin/` path.
pub fn runs_without_shell(cmd: &str) -> bool {
    plain_words(cmd).is_some_and(|words| {
        let program = words[0].strip_prefix("/bin/").unwrap_or(words[0]);
        LEAN_PROGRAMS.contains(&program)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_split_into_words() {
        assert_eq!(
            plain_words("memtide-hog 0:20  290:line"),
            Some(vec!["memtide-hog", "0:20", "290:line"])
        );
        assert_eq!(
            plain_words("/bin/memtide-hog 64:5"),
            Some(vec!["/bin/memtide-hog", "64:5"])
        );
    }

    #[test]
    fn anything_a_shell_would_interpret_is_not_plain() {
        for cmd in [
            "",
            "   ",
            "sleep 1; echo x",
            "dd if=/dev/zero | wc",
            "echo $HOME",
            "echo 'a b'",
            "echo \"a\"",
            "cat < f",
            "echo x > f",
            "a && b",
            "sleep 1 &",
            "ls *",
            "X=1 memtide-hog 1:1",
            "echo ~",
            "tab\there",
            "new\nline",
            "(sub)",
            "echo `id`",
            "a\\ b",
        ] {
            assert_eq!(plain_words(cmd), None, "{cmd:?}");
        }
    }

    #[test]
    fn only_lean_programs_run_without_a_shell() {
        assert!(runs_without_shell("memtide-hog 0:20 96:line"));
        assert!(runs_without_shell("/bin/memtide-hog 1:1"));
        assert!(!runs_without_shell("sleep 5"));
        assert!(!runs_without_shell("memtide-hog 1:1; true"));
        assert!(!runs_without_shell("/usr/bin/memtide-hog 1:1"));
        assert!(!runs_without_shell(""));
    }
}
