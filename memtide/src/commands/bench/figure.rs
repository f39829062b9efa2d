//! One benchmark figure as `memtide bench all` tabulates it.

use super::stats::{median, min_max};

/// A median with its spread, ready for a Markdown row.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Which benchmark.
    pub bench: &'static str,
    /// What was measured.
    pub what: String,
    /// The median, with its unit.
    pub median: String,
    /// Spread, count, ratio or note.
    pub detail: String,
}

impl Figure {
    /// The median of `values` (in `unit`, printed with `decimals`), with
    /// min, max and n as the detail; `None` when there are no values.
    pub fn of(
        bench: &'static str,
        what: &str,
        values: &[f64],
        unit: &str,
        decimals: usize,
    ) -> Option<Self> {
        let (m, (lo, hi)) = (median(values)?, min_max(values)?);
        Some(Self {
            bench,
            what: what.to_string(),
            median: format!("{m:.decimals$} {unit}"),
            detail: format!(
                "min {lo:.decimals$}, max {hi:.decimals$}, n={}",
                values.len()
            ),
        })
    }

    /// A figure whose value is already formatted.
    pub fn text(bench: &'static str, what: &str, median: String, detail: String) -> Self {
        Self {
            bench,
            what: what.to_string(),
            median,
            detail,
        }
    }
}

/// The figures as a Markdown table.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from("| benchmark | what | median | detail |\n|---|---|---|---|\n");
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            f.bench, f.what, f.median, f.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_have_a_median_and_a_spread() {
        let f = Figure::of("boot", "to /init", &[3.0, 1.0, 2.0], "s", 1).expect("figure");
        assert_eq!(f.median, "2.0 s");
        assert_eq!(f.detail, "min 1.0, max 3.0, n=3");
        assert!(Figure::of("boot", "x", &[], "s", 1).is_none());
        let md = markdown(&[f]);
        assert!(
            md.ends_with("| boot | to /init | 2.0 s | min 1.0, max 3.0, n=3 |\n"),
            "{md}"
        );
    }
}
