//! The balancer's timeline as an SVG picture (`memtide plot`): a strip with
//! the budget and the VMs' total memory, then one panel per VM, in the
//! manner of Hyper-V's Assigned / Demand charts, with the decisions marked.
//! See `docs/plot.md` for how to read it.

use std::cmp::Ordering;
use std::fmt::Write as _;

use memtide_balancer::settings::VmSettings;
use memtide_balancer::sim::Tick;
use memtide_balancer::trace::Trace;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 24.0;
const HEADER_H: f64 = 58.0;
const TITLE_H: f64 = 22.0;
const AXIS_H: f64 = 30.0;
const STRIP_H: f64 = 80.0;
const PANEL_H: f64 = 150.0;

const ASSIGNED: &str = r##"stroke="#1f5fbf" stroke-width="2""##;
const DEMAND: &str = r##"stroke="#e07000" stroke-width="1.5" stroke-dasharray="5 3""##;
const COMMITTED: &str = r##"stroke="#2e8b3e""##;
const PLUGGED: &str = r##"stroke="#8a96a3""##;
const BALLOON: &str = r##"stroke="#f2c14e" stroke-width="8" stroke-opacity="0.7""##;
const BOUND: &str = r##"stroke="#555" stroke-dasharray="1 3""##;
const BUDGET: &str = r##"stroke="#c0392b" stroke-width="1.5" stroke-dasharray="8 4""##;
const GRID: &str = r##"stroke="#e3e3e8""##;
const GROW: &str = "#2e8b3e";
const SHRINK: &str = "#c0392b";
const LABEL: &str = r##"text-anchor="end" fill="#444""##;
const TICK_LABEL: &str = r##"text-anchor="middle" fill="#444""##;
const TITLE: &str = r#"font-size="12" font-weight="bold""#;
const HEADLINE: &str = r#"font-size="14" font-weight="bold""#;
const NOTE: &str = r##"text-anchor="middle" fill="#888""##;
const SMALL: &str = r#"text-anchor="end" font-size="10""#;

/// Renders `trace` as a standalone SVG document (deterministic: the same
/// trace gives the same bytes). A decision is marked where a tick's reason
/// for a VM is non-empty and its plugged or balloon memory changed (from its
/// startup size at the first tick), so that traces recording every reason
/// (the simulator's) and traces recording only actions (the driver's) both
/// mark exactly the resizes; the reason is the marker's tooltip.
pub fn render_svg(trace: &Trace) -> String {
    let n = trace.vms.len();
    let panels_top = HEADER_H + TITLE_H + STRIP_H + AXIS_H;
    let height = panels_top + n as f64 * (TITLE_H + PANEL_H + AXIS_H) + 8.0;
    let times = time_range(&trace.ticks);
    let mut o = Out(String::new());
    o.line(format_args!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    ));
    o.line(format_args!(
        r#"<rect width="100%" height="100%" fill="white"/>"#
    ));
    let decisions: usize = (0..n).map(|vm| markers(trace, vm).len()).sum();
    let title = format!(
        "memtide balancer: {n} VM(s), budget {} MiB, {} tick(s) over {} s, {decisions} decision(s)",
        trace.budget_mib,
        trace.ticks.len(),
        num(match (trace.ticks.first(), trace.ticks.last()) {
            (Some(a), Some(b)) => b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0,
            _ => 0.0,
        })
    );
    text(&mut o, (LEFT, 20.0), HEADLINE, &title);
    legend(&mut o, 40.0);
    if trace.ticks.is_empty() {
        text(&mut o, (WIDTH - RIGHT, 20.0), LABEL, "no ticks recorded");
    }
    strip(&mut o, trace, times, HEADER_H);
    for (vm, s) in trace.vms.iter().enumerate() {
        let top = panels_top + vm as f64 * (TITLE_H + PANEL_H + AXIS_H);
        panel(&mut o, trace, vm, s, times, top);
    }
    o.line(format_args!("</svg>"));
    o.0
}

/// Appends formatted lines to a string (writing to a `String` cannot fail).
struct Out(String);

impl Out {
    fn line(&mut self, args: std::fmt::Arguments) {
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
    }
}

/// A plot area: screen rectangle, time range (ms) and value range (MiB).
struct Frame {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    t0: f64,
    t1: f64,
    vmax: f64,
}

impl Frame {
    /// A full-width area below `top`; `t1 > t0`; up to 8 % above `vmax`.
    fn new(top: f64, height: f64, (t0, t1): (f64, f64), vmax: f64) -> Self {
        let vmax = if vmax > 0.0 { vmax * 1.08 } else { 1.0 };
        let (left, right, bottom) = (LEFT, WIDTH - RIGHT, top + height);
        Self {
            left,
            top,
            right,
            bottom,
            t0,
            t1,
            vmax,
        }
    }

    fn x(&self, t_ms: u64) -> f64 {
        let f = (t_ms as f64 - self.t0) / (self.t1 - self.t0);
        self.left + f.clamp(0.0, 1.0) * (self.right - self.left)
    }

    fn y(&self, mib: f64) -> f64 {
        self.bottom - (mib / self.vmax).clamp(0.0, 1.0) * (self.bottom - self.top)
    }
}

/// First and last tick times (ms), at least one second apart.
fn time_range(ticks: &[Tick]) -> (f64, f64) {
    let t0 = ticks.iter().map(|t| t.t_ms).min().unwrap_or(0) as f64;
    let t1 = ticks.iter().map(|t| t.t_ms).max().unwrap_or(0) as f64;
    (t0, if t1 > t0 { t1 } else { t0 + 1000.0 })
}

/// A 1-2-5 step of at least `x`.
/// A tick's time, `x` ms, rounded to whole ms.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "`as` saturates; tick times are within the trace's (non-negative) range"
)]
fn round_ms(x: f64) -> u64 {
    x.round() as u64
}

fn nice_step(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    let m = [1.0, 2.0, 5.0].into_iter().find(|&m| x <= m * p);
    p * m.unwrap_or(10.0)
}

/// A number without needless decimals.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A memory size for an axis label: MiB, or a larger unit when long.
fn mib_label(mut v: f64) -> String {
    for unit in ["", " GiB", " TiB", " PiB", " EiB"] {
        if v < 10_000.0 {
            return format!("{}{unit}", num(v));
        }
        v /= 1024.0;
    }
    format!("{} ZiB", num(v))
}

/// Escapes text and attribute values for XML (control characters, which
/// XML 1.0 forbids, become spaces).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn text(o: &mut Out, (x, y): (f64, f64), attrs: &str, s: &str) {
    let s = esc(s);
    o.line(format_args!(
        r#"<text x="{x:.1}" y="{y:.1}" {attrs}>{s}</text>"#
    ));
}

fn line(o: &mut Out, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
    o.line(format_args!(
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
    ));
}

/// Path and colour of a marker at `(x, y)`: a triangle pointing up for a
/// grow, down for a shrink, a diamond if the size stayed the same.
fn marker(x: f64, y: f64, dir: Ordering) -> (String, &'static str) {
    match dir {
        Ordering::Greater => (format!("M{x:.1},{:.1} l5,9 h-10 Z", y - 4.0), GROW),
        Ordering::Less => (format!("M{x:.1},{:.1} l5,-9 h-10 Z", y + 4.0), SHRINK),
        Ordering::Equal => (
            format!("M{x:.1},{:.1} l4,4 l-4,4 l-4,-4 Z", y - 4.0),
            "#555",
        ),
    }
}

/// The corners of a step line through `(t_ms, MiB)` samples, each value held
/// until the next sample (the last until the frame's end); a `None` breaks
/// the line. One list of points per unbroken run.
fn step_runs(f: &Frame, samples: &[(u64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for (i, &(t, v)) in samples.iter().enumerate() {
        let next_x = samples.get(i + 1).map_or(f.right, |s| f.x(s.0));
        if let Some(v) = v {
            run.extend([(f.x(t), f.y(v)), (next_x, f.y(v))]);
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// SVG path data for point lists.
fn path_data<'a>(runs: impl IntoIterator<Item = &'a Vec<(f64, f64)>>) -> String {
    let mut d = String::new();
    for run in runs {
        for (k, (x, y)) in run.iter().enumerate() {
            let _ = write!(d, "{}{x:.1},{y:.1} ", if k == 0 { 'M' } else { 'L' });
        }
    }
    d.trim_end().to_string()
}

fn series(o: &mut Out, f: &Frame, samples: &[(u64, Option<f64>)], style: &str) {
    let d = path_data(&step_runs(f, samples));
    if !d.is_empty() {
        o.line(format_args!(r#"<path d="{d}" fill="none" {style}/>"#));
    }
}

/// One value of every tick as samples (`None` where missing).
fn column(ticks: &[Tick], pick: impl Fn(&Tick) -> Option<f64>) -> Vec<(u64, Option<f64>)> {
    ticks.iter().map(|t| (t.t_ms, pick(t))).collect()
}

fn at(v: &[u64], vm: usize) -> Option<f64> {
    v.get(vm).map(|&x| x as f64)
}

/// Title, background, gridlines and axis labels of a plot area whose
/// values go up to `vlimit`.
fn axes(o: &mut Out, f: &Frame, title: &str, vlimit: f64) {
    text(o, (f.left, f.top - 7.0), TITLE, title);
    text(o, (f.left - 5.0, f.top - 7.0), LABEL, "MiB");
    o.line(format_args!(
        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fbfbfd" stroke="#bbb"/>"##,
        f.left,
        f.top,
        f.right - f.left,
        f.bottom - f.top
    ));
    // Power-of-two MiB steps, about five per area.
    let step = 2f64.powf((vlimit.max(1.0) / 5.0).log2().ceil()).max(1.0);
    for v in (0..=12)
        .map(|k| f64::from(k) * step)
        .take_while(|&v| v <= f.vmax)
    {
        let y = f.y(v);
        line(o, (f.left, y), (f.right, y), GRID);
        text(o, (f.left - 5.0, y + 4.0), LABEL, &mib_label(v));
    }
    let step = nice_step((f.t1 - f.t0) / 1000.0 / 10.0);
    let first = (f.t0 / 1000.0 / step).ceil();
    let seconds = (0..=40).map(|k| (first + f64::from(k)) * step);
    for s in seconds.take_while(|&s| s * 1000.0 <= f.t1 + 1e-6) {
        let x = f.x(round_ms(s * 1000.0));
        line(o, (x, f.top), (x, f.bottom + 4.0), GRID);
        text(o, (x, f.bottom + 15.0), TICK_LABEL, &num(s));
    }
    text(o, (f.right, f.bottom + 27.0), LABEL, "time (s)");
}

/// The strip: total assigned and total demand against the budget, with the
/// moments over budget shaded.
fn strip(o: &mut Out, trace: &Trace, times: (f64, f64), top: f64) {
    let sum = |v: &[u64]| v.iter().map(|&x| x as f64).sum::<f64>();
    let total = column(&trace.ticks, |t| Some(sum(&t.assigned)));
    let demand = column(&trace.ticks, |t| Some(sum(&t.target)));
    let budget = trace.budget_mib as f64;
    let vmax = total
        .iter()
        .chain(&demand)
        .filter_map(|s| s.1)
        .fold(budget, f64::max);
    let f = Frame::new(top + TITLE_H, STRIP_H, times, vmax);
    let title = format!(
        "all VMs: assigned and demand vs budget ({} MiB)",
        trace.budget_mib
    );
    axes(o, &f, &title, vmax);
    // One shaded rectangle per run of ticks over budget.
    let over = |t: &Tick| (sum(&t.assigned) - budget).max(t.over_budget_mib as f64);
    let mut next = 0;
    for run in trace
        .ticks
        .chunk_by(|a, b| (over(a) > 0.0) == (over(b) > 0.0))
    {
        next += run.len();
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            continue;
        };
        if over(first) <= 0.0 {
            continue;
        }
        let x = f.x(first.t_ms);
        let end = trace.ticks.get(next).map_or(f.right, |n| f.x(n.t_ms));
        let worst = run.iter().map(over).fold(0.0, f64::max);
        let tip = format!(
            "{} s to {} s: over budget by up to {} MiB",
            num(first.t_ms as f64 / 1000.0),
            num(last.t_ms as f64 / 1000.0),
            num(worst)
        );
        o.line(format_args!(
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#c0392b" fill-opacity="0.15"><title>{tip}</title></rect>"##,
            f.top,
            (end - x).max(0.5),
            f.bottom - f.top
        ));
    }
    series(o, &f, &demand, DEMAND);
    series(o, &f, &total, ASSIGNED);
    line(o, (f.left, f.y(budget)), (f.right, f.y(budget)), BUDGET);
}

/// One VM's panel.
fn panel(o: &mut Out, trace: &Trace, vm: usize, s: &VmSettings, times: (f64, f64), top: f64) {
    let ticks = &trace.ticks;
    let assigned = column(ticks, |t| at(&t.assigned, vm));
    let plugged = column(ticks, |t| at(&t.plugged, vm));
    let demand = column(ticks, |t| at(&t.target, vm));
    let honest = |t: &Tick| t.honest.get(vm).copied().unwrap_or(false);
    let committed = column(ticks, |t| at(&t.committed, vm).filter(|_| honest(t)));
    let all = [&assigned, &plugged, &demand, &committed];
    let vmax = all
        .into_iter()
        .flatten()
        .filter_map(|s| s.1)
        .fold(s.maximum_mib as f64, f64::max);
    let f = Frame::new(top + TITLE_H, PANEL_H, times, vmax);
    let title = format!(
        "{}: startup {}, min {}, max {} MiB, buffer {}%, weight {}",
        s.name, s.startup_mib, s.minimum_mib, s.maximum_mib, s.buffer_pct, s.weight
    );
    o.line(format_args!(r#"<g class="panel" id="vm{vm}">"#));
    axes(o, &f, &title, vmax);
    if ticks.is_empty() {
        let middle = ((f.left + f.right) / 2.0, (f.top + f.bottom) / 2.0);
        text(o, middle, NOTE, "no ticks recorded");
    }
    // The balloon: the area between plugged and assigned memory.
    let (upper, lower) = (step_runs(&f, &plugged), step_runs(&f, &assigned));
    if let (Some(p), Some(a)) = (upper.first(), lower.first()) {
        let outline: Vec<(f64, f64)> = p.iter().chain(a.iter().rev()).copied().collect();
        let d = path_data([&outline]);
        o.line(format_args!(
            r##"<path d="{d} Z" fill="#f2c14e" fill-opacity="0.45"/>"##
        ));
    }
    for (v, label) in [(s.minimum_mib, "min"), (s.maximum_mib, "max")] {
        let y = f.y(v as f64);
        line(o, (f.left, y), (f.right, y), BOUND);
        text(o, (f.right - 3.0, y - 3.0), SMALL, label);
    }
    series(o, &f, &plugged, PLUGGED);
    series(o, &f, &committed, COMMITTED);
    series(o, &f, &demand, DEMAND);
    series(o, &f, &assigned, ASSIGNED);
    for (t, now, before, reason) in markers(trace, vm) {
        let (d, fill) = marker(f.x(t), f.y(now as f64), now.cmp(&before));
        let when = num(t as f64 / 1000.0);
        let tip = esc(&format!("{when} s: {before} -> {now} MiB: {reason}"));
        o.line(format_args!(
            r#"<path class="marker" d="{d}" fill="{fill}" stroke="white" stroke-width="0.5"><title>{tip}</title></path>"#
        ));
    }
    o.line(format_args!("</g>"));
}

/// The decisions for `vm`: `(t_ms, assigned after, assigned before, reason)`
/// for each tick with a non-empty reason where plugged or balloon memory
/// changed.
fn markers(trace: &Trace, vm: usize) -> Vec<(u64, u64, u64, &str)> {
    let mut prev = (trace.vms.get(vm).map_or(0, |s| s.startup_mib), 0);
    let mut out = Vec::new();
    for t in &trace.ticks {
        let (Some(&plugged), Some(&balloon)) = (t.plugged.get(vm), t.balloon.get(vm)) else {
            continue;
        };
        let reason = t.reasons.get(vm).map_or("", String::as_str);
        if !reason.is_empty() && (plugged, balloon) != prev {
            let now = plugged.saturating_sub(balloon);
            out.push((t.t_ms, now, prev.0.saturating_sub(prev.1), reason));
        }
        prev = (plugged, balloon);
    }
    out
}

/// The legend row.
fn legend(o: &mut Out, y: f64) {
    let mut x = LEFT;
    let label = |o: &mut Out, x: &mut f64, s: &str| {
        text(o, (*x + 22.0, y), "", s);
        *x += 30.0 + s.len() as f64 * 6.2;
    };
    let lines = [
        ("Assigned", ASSIGNED),
        ("Demand (target)", DEMAND),
        ("Committed (reported)", COMMITTED),
        ("Plugged", PLUGGED),
        ("Balloon", BALLOON),
        ("min / max", BOUND),
        ("Budget", BUDGET),
    ];
    for (name, style) in lines {
        line(o, (x, y - 4.0), (x + 18.0, y - 4.0), style);
        label(o, &mut x, name);
    }
    for (name, dir) in [("grow", Ordering::Greater), ("shrink", Ordering::Less)] {
        let (d, fill) = marker(x + 9.0, y - 4.0, dir);
        o.line(format_args!(r#"<path d="{d}" fill="{fill}"/>"#));
        label(o, &mut x, name);
    }
}

/// Errors of reading a trace or writing its plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The trace file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a usable trace.
    #[error("{path}: {source}")]
    Trace {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        source: memtide_balancer::trace::TraceError,
    },
    /// The SVG could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Writes the plot of `trace` to `out`.
pub fn write(trace: &Trace, out: &std::path::Path) -> Result<(), PlotError> {
    std::fs::write(out, render_svg(trace)).map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })
}

/// `memtide plot`: reads the JSON trace at `trace` and writes its SVG to `out`.
pub fn plot_file(trace: &std::path::Path, out: &std::path::Path) -> Result<(), PlotError> {
    let text = std::fs::read_to_string(trace).map_err(|source| PlotError::Read {
        path: trace.to_path_buf(),
        source,
    })?;
    let parsed = Trace::from_json(&text).map_err(|source| PlotError::Trace {
        path: trace.to_path_buf(),
        source,
    })?;
    write(&parsed, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtide_balancer::sim::{settings_of, simulate, Agent, Curve, SimVm};
    use memtide_balancer::trace::TRACE_VERSION;
    use memtide_balancer::PolicyConfig;

    fn trace(budget_mib: u64, ticks: u64) -> Trace {
        let step = Curve::Step {
            at_ms: 5_000,
            before: 200,
            after: 900,
        };
        let ramp = Curve::Ramp {
            from: 200,
            to: 800,
            over_ms: 30_000,
        };
        let mut b = SimVm::new("b", 512, 256, 1024, ramp);
        b.agent = Agent::SilentFrom(32_000);
        let vms = [SimVm::new("a", 512, 256, 2048, step), b];
        let ticks = simulate(PolicyConfig::default(), &vms, budget_mib, 250, ticks).expect("sim");
        Trace {
            version: TRACE_VERSION,
            budget_mib,
            vms: settings_of(&vms),
            ticks,
        }
    }

    /// Checks that `svg` is well-formed XML (for what the renderer writes):
    /// balanced tags, quoted attributes, no raw `<` or stray `&` in text.
    /// Returns the number of elements.
    fn well_formed(svg: &str) -> Result<usize, String> {
        fn entity(s: &str) -> Result<usize, String> {
            let end = s.find(';').ok_or("unterminated entity")?;
            match &s[1..end] {
                "lt" | "gt" | "amp" | "quot" | "apos" => Ok(end + 1),
                e => Err(format!("unknown entity &{e};")),
            }
        }
        let (mut stack, mut count, mut rest) = (Vec::new(), 0, svg.trim_end());
        while let Some(c) = rest.chars().next() {
            match c {
                '&' => rest = &rest[entity(rest)?..],
                '<' if rest.starts_with("</") => {
                    let end = rest.find('>').ok_or("unterminated end tag")?;
                    let name = rest[2..end].trim();
                    if stack.pop() != Some(name) {
                        return Err(format!("</{name}> does not close {stack:?}"));
                    }
                    rest = &rest[end + 1..];
                }
                '<' => {
                    let name_end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/');
                    let name_end = name_end.ok_or("unterminated tag")?;
                    let name = &rest[1..name_end];
                    rest = rest[name_end..].trim_start();
                    while !rest.starts_with('>') && !rest.starts_with("/>") {
                        let eq = rest
                            .find('=')
                            .ok_or(format!("attribute without value in <{name}>"))?;
                        let after = rest[eq + 1..]
                            .strip_prefix('"')
                            .ok_or("unquoted attribute")?;
                        let close = after.find('"').ok_or("unterminated attribute")?;
                        let value = &after[..close];
                        if value.contains('<') {
                            return Err(format!("raw < in attribute of <{name}>"));
                        }
                        for (i, _) in value.match_indices('&') {
                            entity(&value[i..])?;
                        }
                        rest = after[close + 1..].trim_start();
                    }
                    if let Some(r) = rest.strip_prefix("/>") {
                        rest = r;
                    } else {
                        stack.push(name);
                        rest = &rest[1..];
                    }
                    count += 1;
                }
                '>' => return Err("raw > in text".into()),
                c => rest = &rest[c.len_utf8()..],
            }
            if stack.is_empty() && !rest.trim().is_empty() && count > 0 {
                return Err(format!("content after the root: {:.40}", rest));
            }
        }
        if stack.is_empty() {
            Ok(count)
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    fn acted(t: &Trace) -> usize {
        (0..t.vms.len()).map(|vm| markers(t, vm).len()).sum()
    }

    #[test]
    fn renders_well_formed_svg_with_one_panel_per_vm() {
        let t = trace(1536, 160);
        let svg = render_svg(&t);
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" "#));
        assert!(svg.contains("viewBox=\"0 0 "));
        assert!(well_formed(&svg).expect("well-formed") > 50);
        assert_eq!(svg.matches(r#"<g class="panel""#).count(), 2);
        assert_eq!(render_svg(&t), svg, "deterministic");
        assert!(!svg.contains("over budget by"));
        let short = render_svg(&trace(400, 20));
        assert_eq!(short.matches("over budget by up to").count(), 1, "one run");
    }

    #[test]
    fn marks_every_resize_with_its_reason() {
        let mut t = trace(1536, 160);
        // The simulator records a reason every tick: only resizes are marked.
        let resizes = acted(&t);
        assert!(resizes >= 3 && resizes < t.ticks.len(), "{resizes}");
        let svg = render_svg(&t);
        assert_eq!(svg.matches(r#"class="marker""#).count(), resizes);
        assert!(
            svg.contains("l5,9 h-10") && svg.contains("l5,-9 h-10"),
            "grow and shrink"
        );
        // The driver records reasons only for actions: one marker per reason.
        let mut prev: Vec<(u64, u64)> = t.vms.iter().map(|s| (s.startup_mib, 0)).collect();
        for tick in &mut t.ticks {
            for (vm, p) in prev.iter_mut().enumerate() {
                let now = (tick.plugged[vm], tick.balloon[vm]);
                if now == *p {
                    tick.reasons[vm].clear();
                }
                *p = now;
            }
        }
        let reasons = t
            .ticks
            .iter()
            .flat_map(|k| &k.reasons)
            .filter(|r| !r.is_empty())
            .count();
        assert_eq!(reasons, resizes);
        assert_eq!(render_svg(&t).matches(r#"class="marker""#).count(), reasons);
    }

    #[test]
    fn escapes_names_and_reasons() {
        let mut t = trace(1536, 40);
        t.vms[0].name = "web<&>\"'".into();
        let first = markers(&t, 0).first().map(|m| m.0).expect("a decision");
        let tick = t.ticks.iter_mut().find(|k| k.t_ms == first).expect("tick");
        tick.reasons[0] = "grow <&> now".into();
        let svg = render_svg(&t);
        well_formed(&svg).expect("well-formed");
        assert!(svg.contains("grow &lt;&amp;&gt; now"));
        assert!(svg.contains("web&lt;&amp;&gt;&quot;&apos;:"));
        assert!(well_formed("<a><b></a></b>").is_err());
        assert!(well_formed("<a x=1/>").is_err());
        assert!(well_formed("<a>1 < 2</a>").is_err());
        assert!(well_formed("<a>&</a>").is_err());
    }

    #[test]
    fn edge_cases_render() {
        let t = trace(1536, 0);
        let svg = render_svg(&t);
        well_formed(&svg).expect("no ticks");
        assert!(svg.contains("no ticks recorded"));
        assert_eq!(svg.matches(r#"<g class="panel""#).count(), 2);
        let mut one = trace(1536, 1);
        well_formed(&render_svg(&one)).expect("one tick");
        one.vms[1] = VmSettings::new("z", 0, 0, 0);
        let tick = &mut one.ticks[0];
        (tick.assigned[1], tick.plugged[1], tick.balloon[1]) = (0, 0, 0);
        well_formed(&render_svg(&one)).expect("maximum 0");
        let mut huge = trace(u64::MAX, 3);
        for k in &mut huge.ticks {
            k.assigned = vec![u64::MAX, u64::MAX];
            k.committed.pop();
            k.reasons = vec!["x".into(); 2];
        }
        huge.vms[1].maximum_mib = u64::MAX;
        let svg = render_svg(&huge);
        well_formed(&svg).expect("huge values");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        huge.vms.clear();
        well_formed(&render_svg(&huge)).expect("no VMs");
    }

    /// Writes examples to /tmp/plot-example*.svg, to look at by hand:
    /// `cargo test -p memtide plot::tests::write_example -- --ignored`.
    #[test]
    #[ignore = "writes /tmp/plot-example*.svg"]
    fn write_example() {
        let runs = [
            (1536, 160, ""),
            (400, 160, "-short"),
            (1536, 0, "-empty"),
            (1536, 1, "-one"),
        ];
        for (budget, ticks, name) in runs {
            let svg = render_svg(&trace(budget, ticks));
            std::fs::write(format!("/tmp/plot-example{name}.svg"), svg).expect("write");
        }
    }
}
