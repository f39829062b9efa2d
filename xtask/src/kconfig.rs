//! Reading kernel config fragments and checking that they took effect.

use std::collections::BTreeMap;

/// `CONFIG_X` → value (`"n"` for `# CONFIG_X is not set`).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") {
                    map.insert(name.to_string(), "n".to_string());
                }
            }
        } else if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") {
                map.insert(k.to_string(), v.to_string());
            }
        }
    }
    map
}

/// Options of `fragment` whose value in the final `config` differs
/// (options absent from `config` count as `n`).
pub fn dropped(fragment: &str, config: &str) -> Vec<String> {
    let have = parse(config);
    parse(fragment)
        .into_iter()
        .filter(|(k, v)| have.get(k).map_or("n", String::as_str) != v)
        .map(|(k, v)| {
            let got = have.get(&k).map_or("n", String::as_str).to_string();
            format!("{k} (wanted {v}, got {got})")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_and_unset_options_and_ignores_comments() {
        let m = parse("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n\n");
        assert_eq!(m.get("CONFIG_A").map(String::as_str), Some("y"));
        assert_eq!(m.get("CONFIG_B").map(String::as_str), Some("n"));
        assert_eq!(m.get("CONFIG_C").map(String::as_str), Some("\"x y\""));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn reports_options_that_did_not_stick() {
        let fragment = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=32\n";
        let config = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_D=8\n";
        assert_eq!(
            dropped(fragment, config),
            vec![
                "CONFIG_B (wanted n, got y)",
                "CONFIG_C (wanted y, got n)",
                "CONFIG_D (wanted 32, got 8)"
            ]
        );
        assert!(dropped("# CONFIG_X is not set\n", "").is_empty());
    }
}
