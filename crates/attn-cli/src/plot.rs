//! Plots of `attn bench` results: SVG, one panel per configuration, throughput against sequence
//! length (log2 axis) with one line per implementation.
//!
//! The bench writes its JSON and then [`write_beside`] it (same stem, `.svg`); `attn plot
//! BENCH.json [-o OUT.svg]` ([`run`]) reads such a JSON back and draws the same figure, so plots
//! can be regenerated without a GPU. Three JSON shapes are understood, as the bench writes them:
//!
//! - the canonical table (`--pass fwd|bwd`): a list of rows `{dtype, d, causal, seqlen, batch,
//!   heads, pass?, ms, tflops, peers: {flash|efficient|cudnn: TFLOP/s}}` (`pass` is absent in
//!   files older than the backward: forward); a panel per (pass, dtype, D, causal), y = TFLOP/s;
//! - the feature rows (`--features`): a list of rows `{row, seqlen, tflops, peers: {name:
//!   {tflops} | {error}}, ...}`; a panel per feature row, y = TFLOP/s;
//! - the decode rows (`--pass decode`, `--decode`): `{device, copy_gbps, rows: [{dtype, d, batch,
//!   seq_q, seq_k, heads_q, heads_k, causal, gbps, peers: {name: {gbps} | {error}}, ...}]}`; a
//!   panel per (dtype, D, Sq, Hq/Hk, causal), x = the KV length, y = GB/s, each point of ours
//!   labelled with its batch, and the copy bandwidth of the run as a dashed line.
//!
//! Rows or peers without a number (errors, missing peers) are left out of the lines. The SVG is
//! drawn by `plotters`' SVG backend without fonts: text is SVG `<text>`, laid out with plotters'
//! estimated glyph widths.
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a plot could not be made (what was being done, and what went wrong).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlotError(String);

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlotError {}

/// A [`PlotError`] from a message.
fn err(msg: impl Into<String>) -> PlotError {
    PlotError(msg.into())
}

/// The series name of our kernels.
pub(crate) const OURS: &str = "attn (ours)";

/// One measured point.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    /// Sequence length (or KV length).
    pub(crate) x: f64,
    /// Throughput.
    pub(crate) y: f64,
    /// Drawn beside the point (e.g. the batch of a decode row).
    pub(crate) label: Option<String>,
}

/// One implementation's points in one panel, in ascending `x`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    /// Legend name: [`OURS`] or `torch <backend>`.
    pub(crate) name: String,
    /// The points.
    pub(crate) points: Vec<Point>,
}

/// One configuration: its lines, and horizontal reference lines `(name, y)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Panel {
    /// Caption of the panel (the configuration).
    pub(crate) title: String,
    /// Lines, ours first, then the peers in a fixed order.
    pub(crate) series: Vec<Series>,
    /// Horizontal reference lines (the copy bandwidth of a decode run).
    pub(crate) refs: Vec<(String, f64)>,
}

/// A figure: panels that share the axis descriptions and the legend.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Figure {
    /// Title above every panel.
    pub(crate) title: String,
    /// Description of the x axis.
    pub(crate) x_label: String,
    /// Description of the y axis.
    pub(crate) y_label: String,
    /// The panels, in the order of their first row in the JSON.
    pub(crate) panels: Vec<Panel>,
}

/// `attn plot`: re-plot a JSON written by `attn bench --json`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// A JSON file written by `attn bench --json` (canonical, `--pass bwd`, `--features` or
    /// `--pass decode`).
    json: PathBuf,
    /// Where to write the SVG (default: beside the JSON, same stem, `.svg`).
    #[arg(short = 'o', long = "output", value_name = "OUT.svg")]
    output: Option<PathBuf>,
}

/// Runs `attn plot`: reads the JSON, writes the SVG, prints its path.
pub(crate) fn run(a: &Args) -> Result<(), PlotError> {
    let bytes = std::fs::read(&a.json)
        .map_err(|e| err(format!("cannot read {}: {e}", a.json.display())))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{} is not JSON: {e}", a.json.display())))?;
    let fig = Figure::from_bench_json(&doc)
        .map_err(|e| err(format!("cannot plot {}: {e}", a.json.display())))?;
    let out = a.output.clone().unwrap_or_else(|| svg_path(&a.json));
    write_svg(&fig, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The plot's path for a JSON path: same directory and stem, `.svg`.
pub(crate) fn svg_path(json: &Path) -> PathBuf {
    json.with_extension("svg")
}

/// Plots `doc` (what the bench wrote to `json`) to [`svg_path`]`(json)` and returns that path.
pub(crate) fn write_beside(json: &Path, doc: &impl serde::Serialize) -> Result<PathBuf, PlotError> {
    let v = serde_json::to_value(doc).map_err(|e| err(format!("serialising the rows: {e}")))?;
    let fig = Figure::from_bench_json(&v)?;
    let out = svg_path(json);
    write_svg(&fig, &out)?;
    Ok(out)
}

/// Renders `fig` and writes it to `path`.
pub(crate) fn write_svg(fig: &Figure, path: &Path) -> Result<(), PlotError> {
    let svg = fig.render_svg()?;
    std::fs::write(path, svg).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// The legend name of a peer of the JSON (`flash` → `torch flash`).
fn peer_name(key: &str) -> String {
    match key {
        "cudnn" => "torch cuDNN".into(),
        k => format!("torch {k}"),
    }
}

/// Where a series sorts among the lines and the legend (ours first).
fn rank(name: &str) -> usize {
    [
        OURS,
        "torch flash",
        "torch efficient",
        "torch cuDNN",
        "torch flex",
    ]
    .iter()
    .position(|n| *n == name)
    .unwrap_or(usize::MAX)
}

/// The number `key` of a peer entry: the entry itself when it is a number, else its field `key`
/// unless it holds an `error`.
fn metric(v: &Value, key: &str) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) if !o.contains_key("error") => o.get(key).and_then(Value::as_f64),
        _ => None,
    }
}

/// Panels being gathered, in order of appearance.
#[derive(Default)]
struct Builder {
    panels: Vec<Panel>,
}

impl Builder {
    /// Adds `(x, y)` to series `series` of panel `panel`; a missing or non-finite `y` (an error
    /// row) or an `x` that a log axis cannot show adds nothing.
    fn point(&mut self, panel: &str, series: &str, x: f64, y: Option<f64>, label: Option<String>) {
        let Some(y) = y.filter(|y| y.is_finite()) else {
            return;
        };
        if !(x.is_finite() && x > 0.0) {
            return;
        }
        let p = match self.panels.iter().position(|p| p.title == panel) {
            Some(i) => &mut self.panels[i],
            None => {
                self.panels.push(Panel {
                    title: panel.to_string(),
                    series: Vec::new(),
                    refs: Vec::new(),
                });
                let n = self.panels.len();
                &mut self.panels[n - 1]
            }
        };
        let s = match p.series.iter().position(|s| s.name == series) {
            Some(i) => &mut p.series[i],
            None => {
                p.series.push(Series {
                    name: series.to_string(),
                    points: Vec::new(),
                });
                let n = p.series.len();
                &mut p.series[n - 1]
            }
        };
        s.points.push(Point { x, y, label });
    }

    /// Row `r`'s `key` (ours, with `label`) and each of its peers' (`peers.<name>.<key>`) at `x`
    /// in `panel`.
    fn ours_and_peers(&mut self, panel: &str, x: f64, r: &Value, key: &str, label: Option<String>) {
        self.point(panel, OURS, x, r.get(key).and_then(Value::as_f64), label);
        if let Some(peers) = r.get("peers").and_then(Value::as_object) {
            for (k, v) in peers {
                self.point(panel, &peer_name(k), x, metric(v, key), None);
            }
        }
    }

    /// The panels, each series in ascending `x` and the series in [`rank`] order.
    fn finish(mut self) -> Vec<Panel> {
        for p in &mut self.panels {
            p.series.sort_by(|a, b| {
                rank(&a.name)
                    .cmp(&rank(&b.name))
                    .then_with(|| a.name.cmp(&b.name))
            });
            for s in &mut p.series {
                s.points.sort_by(|a, b| a.x.total_cmp(&b.x));
            }
        }
        self.panels
    }
}

/// Field `k` of row `i`, or an error naming both.
fn field<'a>(row: &'a Value, i: usize, k: &str) -> Result<&'a Value, PlotError> {
    row.get(k)
        .filter(|v| !v.is_null())
        .ok_or_else(|| err(format!("row {i} has no `{k}`")))
}

/// Field `k` of row `i` as a number.
fn num(row: &Value, i: usize, k: &str) -> Result<f64, PlotError> {
    field(row, i, k)?
        .as_f64()
        .ok_or_else(|| err(format!("row {i}: `{k}` is not a number")))
}

/// `true`/`false` field `k` of row `i` (absent: `false`).
fn flag(row: &Value, k: &str) -> bool {
    row.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// Field `k` of row `i` as text (a string, or a number written out).
fn text(row: &Value, i: usize, k: &str) -> Result<String, PlotError> {
    match field(row, i, k)? {
        Value::String(s) => Ok(s.clone()),
        v => Ok(v.to_string()),
    }
}

impl Figure {
    /// The figure of a bench JSON document (see the module docs for the shapes understood).
    pub(crate) fn from_bench_json(doc: &Value) -> Result<Figure, PlotError> {
        let fig = match doc {
            Value::Object(o) if o.get("rows").is_some_and(Value::is_array) => Self::decode(doc)?,
            Value::Array(rows) if rows.is_empty() => return Err(err("the JSON has no rows")),
            Value::Array(rows) if rows[0].get("row").is_some() => Self::features(rows)?,
            Value::Array(rows) => Self::canonical(rows)?,
            _ => {
                return Err(err(
                    "not a bench JSON: expected a list of rows (canonical or --features) or an \
                     object with `rows` (decode)",
                ));
            }
        };
        if fig.panels.is_empty() {
            return Err(err(
                "no row has a number to plot (every row and peer is an error)",
            ));
        }
        Ok(fig)
    }

    /// The canonical table (`--pass fwd|bwd`).
    fn canonical(rows: &[Value]) -> Result<Figure, PlotError> {
        let mut b = Builder::default();
        let mut passes: Vec<String> = Vec::new();
        let mut tokens: Vec<f64> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let pass = r
                .get("pass")
                .and_then(Value::as_str)
                .unwrap_or("fwd")
                .to_string();
            if !passes.contains(&pass) {
                passes.push(pass.clone());
            }
            let (dtype, d, s) = (text(r, i, "dtype")?, num(r, i, "d")?, num(r, i, "seqlen")?);
            let t = r.get("batch").and_then(Value::as_f64).unwrap_or(0.0) * s;
            if !tokens.contains(&t) {
                tokens.push(t);
            }
            let causal = if flag(r, "causal") {
                "causal"
            } else {
                "non-causal"
            };
            let panel = format!("{pass} {dtype} D={d} {causal}");
            b.ours_and_peers(&panel, s, r, "tflops", None);
        }
        let mut panels = b.finish();
        // One pass (always, from the bench): say it in the title, not in every caption.
        let title = match passes.as_slice() {
            [p] => {
                for panel in &mut panels {
                    panel.title = panel.title[p.len() + 1..].to_string();
                }
                match p.as_str() {
                    "fwd" => "attn bench: forward, TFLOP/s (4·B·H·S²·D, halved when causal)".into(),
                    "bwd" => {
                        "attn bench --pass bwd: backward, TFLOP/s (2.5x the forward's FLOPs)".into()
                    }
                    p => format!("attn bench --pass {p}: TFLOP/s"),
                }
            }
            _ => "attn bench: TFLOP/s".to_string(),
        };
        let x_label = match tokens.as_slice() {
            [t] if *t > 0.0 => format!("sequence length S (B·S = {t})"),
            _ => "sequence length S".into(),
        };
        Ok(Figure {
            title,
            x_label,
            y_label: "TFLOP/s".into(),
            panels,
        })
    }

    /// The feature rows (`--features`).
    fn features(rows: &[Value]) -> Result<Figure, PlotError> {
        let mut b = Builder::default();
        let mut shape = None;
        for (i, r) in rows.iter().enumerate() {
            let (row, s) = (text(r, i, "row")?, num(r, i, "seqlen")?);
            shape.get_or_insert_with(|| {
                format!(
                    "{} D={} H={}",
                    r.get("dtype").and_then(Value::as_str).unwrap_or("?"),
                    r.get("d").map_or("?".into(), Value::to_string),
                    r.get("heads").map_or("?".into(), Value::to_string),
                )
            });
            let panel = if r.get("seqlens").is_some_and(Value::is_array) {
                format!("{row} (S = the longest sequence)")
            } else {
                row
            };
            b.ours_and_peers(&panel, s, r, "tflops", None);
        }
        Ok(Figure {
            title: format!(
                "attn bench --features: TFLOP/s ({})",
                shape.unwrap_or_default()
            ),
            x_label: "sequence length S".into(),
            y_label: "TFLOP/s".into(),
            panels: b.finish(),
        })
    }

    /// The decode rows (`--pass decode`).
    fn decode(doc: &Value) -> Result<Figure, PlotError> {
        let rows = doc["rows"].as_array().map_or(&[][..], Vec::as_slice);
        let mut b = Builder::default();
        for (i, r) in rows.iter().enumerate() {
            let sk = num(r, i, "seq_k")?;
            let panel = format!(
                "{} D={} Sq={} Hq/Hk={}/{}{}",
                text(r, i, "dtype")?,
                text(r, i, "d")?,
                text(r, i, "seq_q")?,
                text(r, i, "heads_q")?,
                text(r, i, "heads_k")?,
                if flag(r, "causal") { " causal" } else { "" }
            );
            let batch = format!("B={}", text(r, i, "batch")?);
            b.ours_and_peers(&panel, sk, r, "gbps", Some(batch));
        }
        let mut panels = b.finish();
        if let Some(c) = doc.get("copy_gbps").and_then(Value::as_f64) {
            for p in &mut panels {
                p.refs.push((format!("d2d copy (torch), {c:.0} GB/s"), c));
            }
        }
        let device = doc.get("device").and_then(Value::as_str).unwrap_or("");
        Ok(Figure {
            title: format!(
                "attn bench --pass decode{}: GB/s (K, V, Q read once, O written once)",
                if device.is_empty() {
                    String::new()
                } else {
                    format!(" on {device}")
                }
            ),
            x_label: "KV cache length Sk, batch B".into(),
            y_label: "GB/s".into(),
            panels,
        })
    }

    /// Every series name in legend order, then the reference lines'.
    fn legend(&self) -> (Vec<&str>, Vec<&str>) {
        let mut names: Vec<&str> = Vec::new();
        let mut refs: Vec<&str> = Vec::new();
        for p in &self.panels {
            for s in &p.series {
                if !names.contains(&s.name.as_str()) {
                    names.push(&s.name);
                }
            }
            for (r, _) in &p.refs {
                if !refs.contains(&r.as_str()) {
                    refs.push(r);
                }
            }
        }
        names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        (names, refs)
    }

    /// The figure as an SVG document: the title, one legend for every panel, and the panels in a
    /// grid.
    pub(crate) fn render_svg(&self) -> Result<String, PlotError> {
        let n = self.panels.len();
        if n == 0 {
            return Err(err("nothing to plot: no panel"));
        }
        let cols = match n {
            1..=3 => n,
            4 => 2,
            5 | 6 => 3,
            _ => 4,
        };
        let rows = n.div_ceil(cols);
        let (pw, ph, head) = (PANEL_W, PANEL_H, HEAD_H);
        let size = ((cols * pw) as u32, (rows * ph + head) as u32);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            let de = |e: DrawingAreaErrorKind<_>| err(format!("drawing the plot: {e}"));
            root.fill(&WHITE).map_err(de)?;
            let (top, grid) = root.split_vertically(head as i32);
            top.titled(&self.title, (FONT, 22).into_font().color(&BLACK))
                .and_then(|legend| self.draw_legend(&legend))
                .map_err(de)?;
            for (panel, area) in self.panels.iter().zip(grid.split_evenly((rows, cols))) {
                self.draw_panel(panel, &area)
                    .map_err(|e| err(format!("drawing panel {}: {e}", panel.title)))?;
            }
            root.present().map_err(de)?;
        }
        Ok(svg)
    }

    /// The legend: one row of entries (line, marker, name), centred.
    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let (names, refs) = self.legend();
        let font = (FONT, 15).into_font().color(&BLACK);
        let widths: Vec<i32> = names
            .iter()
            .chain(&refs)
            .map(|s| {
                area.estimate_text_size(s, &font)
                    .map_or(120, |(w, _)| w as i32)
                    + LEGEND_GAP
            })
            .collect();
        let total: i32 = widths.iter().sum();
        let (w, h) = area.dim_in_pixel();
        let mut x = ((w as i32 - total) / 2).max(4);
        let y = (h as i32 / 2).max(8);
        for (i, (name, wd)) in names.iter().chain(&refs).zip(&widths).enumerate() {
            let is_ref = i >= names.len();
            let c = if is_ref { REF_COLOR } else { color(name) };
            let line = vec![(x, y), (x + 28, y)];
            if is_ref {
                for k in 0..3 {
                    let x0 = x + 10 * k;
                    area.draw(&PathElement::new(
                        vec![(x0, y), (x0 + 6, y)],
                        c.stroke_width(2),
                    ))?;
                }
            } else {
                area.draw(&PathElement::new(line, c.stroke_width(2)))?;
                area.draw(&Circle::new((x + 14, y), marker(name), c.filled()))?;
            }
            area.draw(&Text::new(name.to_string(), (x + 34, y - 8), font.clone()))?;
            x += wd;
        }
        Ok(())
    }

    /// One panel: log2 x over the panel's sequence lengths (ticks at each), linear y from 0.
    fn draw_panel<DB: DrawingBackend>(
        &self,
        p: &Panel,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let mut xs: Vec<f64> = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.x))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let (lo, hi) = match (xs.first(), xs.last()) {
            (Some(&a), Some(&b)) if a < b => (a / 1.3, b * 1.3),
            (Some(&a), _) => (a / 2.0, a * 2.0),
            _ => (1.0, 2.0),
        };
        let ymax = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.y))
            .chain(p.refs.iter().map(|r| r.1))
            .fold(0.0f64, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.08 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, (FONT, 17).into_font().color(&BLACK))
            .margin(12)
            .margin_right(24)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (lo..hi).log_scale().base(2.0).with_key_points(xs.clone()),
                0f64..ymax,
            )?;
        // Point labels (a decode row's batch) go into the tick labels when each tick has one;
        // otherwise beside their points.
        let mut ticks: Vec<(f64, Vec<&str>)> = xs.iter().map(|&x| (x, Vec::new())).collect();
        for q in p.series.iter().flat_map(|s| &s.points) {
            if let (Some(l), Some(t)) = (&q.label, ticks.iter_mut().find(|t| t.0 == q.x))
                && !t.1.contains(&l.as_str())
            {
                t.1.push(l);
            }
        }
        let in_ticks = ticks.iter().all(|t| t.1.len() <= 1);
        let fmt_x = |x: &f64| match ticks.iter().find(|t| t.0 == *x) {
            Some((_, l)) if in_ticks && l.len() == 1 => format!("{}, {}", seq_label(*x), l[0]),
            _ => seq_label(*x),
        };
        let fmt_y = |y: &f64| {
            if ymax < 10.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.0}")
            }
        };
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .y_labels(8)
            .label_style((FONT, 13).into_font().color(&BLACK))
            .axis_desc_style((FONT, 14).into_font().color(&BLACK))
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(BLACK.mix(0.04))
            .draw()?;
        // Reference lines are named (with their value) in the legend only: a label in the panel
        // would sit on some line.
        for (_, y) in &p.refs {
            chart.draw_series(DashedLineSeries::new(
                [(lo, *y), (hi, *y)],
                6,
                5,
                REF_COLOR.stroke_width(2),
            ))?;
        }
        for s in &p.series {
            let c = color(&s.name);
            chart.draw_series(LineSeries::new(
                s.points.iter().map(|q| (q.x, q.y)),
                c.stroke_width(2),
            ))?;
            chart.draw_series(
                s.points
                    .iter()
                    .map(|q| Circle::new((q.x, q.y), marker(&s.name), c.filled())),
            )?;
            chart.draw_series(s.points.iter().filter_map(|q| {
                let l = q.label.clone().filter(|_| !in_ticks)?;
                Some(
                    EmptyElement::at((q.x, q.y))
                        + Text::new(l, (7, 4), (FONT, 12).into_font().color(&c)),
                )
            }))?;
        }
        Ok(())
    }
}

/// The font family of every text (no font files are read: SVG `<text>`).
const FONT: &str = "sans-serif";
/// Pixels of one panel.
const PANEL_W: usize = 520;
/// Pixels of one panel.
const PANEL_H: usize = 380;
/// Pixels above the panels: the title and the legend.
const HEAD_H: usize = 76;
/// Pixels between legend entries, beyond the text.
const LEGEND_GAP: i32 = 64;
/// The colour of reference lines.
const REF_COLOR: RGBColor = RGBColor(90, 90, 90);

/// A series' colour: fixed per implementation, so that panels and figures agree.
fn color(name: &str) -> RGBColor {
    match rank(name) {
        0 => RGBColor(214, 39, 40),
        1 => RGBColor(31, 119, 180),
        2 => RGBColor(255, 127, 14),
        3 => RGBColor(44, 160, 44),
        4 => RGBColor(148, 103, 189),
        _ => RGBColor(140, 86, 75),
    }
}

/// Marker radius: ours a little larger.
fn marker(name: &str) -> u32 {
    if name == OURS { 5 } else { 4 }
}

/// A sequence length as a tick label: `512`, `1k`, `16k`, `1000`.
fn seq_label(x: f64) -> String {
    let r = x.round();
    if (x - r).abs() > 1e-6 {
        format!("{x:.1}")
    } else if r >= 1024.0 && r % 1024.0 == 0.0 {
        format!("{}k", r / 1024.0)
    } else {
        format!("{r}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runs(name: &str) -> Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/runs")
            .join(name);
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    fn synthetic() -> Figure {
        let s = |name: &str, pts: &[(f64, f64)]| Series {
            name: name.into(),
            points: pts
                .iter()
                .map(|&(x, y)| Point { x, y, label: None })
                .collect(),
        };
        Figure {
            title: "a synthetic figure".into(),
            x_label: "sequence length S".into(),
            y_label: "TFLOP/s".into(),
            panels: vec![
                Panel {
                    title: "bf16 D=64 causal".into(),
                    series: vec![
                        s(OURS, &[(512.0, 100.0), (1024.0, 150.0)]),
                        s("torch flash", &[(512.0, 90.0), (1024.0, 170.0)]),
                    ],
                    refs: vec![],
                },
                Panel {
                    title: "bf16 D=128 non-causal".into(),
                    series: vec![s("torch cuDNN", &[(2048.0, 400.0)])],
                    refs: vec![("d2d copy (torch), 350 GB/s".into(), 350.0)],
                },
            ],
        }
    }

    /// The text of every `<text>` element of an SVG, trimmed.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim())
            })
            .collect()
    }

    #[test]
    fn svg_names_every_series_axis_and_panel() {
        let svg = synthetic().render_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        let texts = texts(&svg);
        for t in [
            OURS,
            "torch flash",
            "torch cuDNN",
            "d2d copy (torch), 350 GB/s",
            "sequence length S",
            "TFLOP/s",
            "a synthetic figure",
            "bf16 D=64 causal",
            "bf16 D=128 non-causal",
            // Tick labels on the log2 axis at each sequence length.
            "512",
            "1k",
            "2k",
        ] {
            assert!(texts.contains(&t), "{t} missing from {texts:?}");
        }
        // One legend entry per series and reference line, not one per panel.
        assert_eq!(texts.iter().filter(|t| **t == "torch flash").count(), 1);
        // Axis descriptions in each of the two panels.
        assert_eq!(texts.iter().filter(|t| **t == "TFLOP/s").count(), 2);
        // One polyline per series of two or more points, in its colour.
        assert!(svg.matches("<polyline").count() >= 2);
        assert!(
            svg.contains("#D62728") || svg.contains("rgb(214,39,40)") || svg.contains("#d62728")
        );
    }

    #[test]
    fn an_empty_figure_is_an_error() {
        let mut f = synthetic();
        f.panels.clear();
        assert!(f.render_svg().is_err());
        assert!(Figure::from_bench_json(&json!([])).is_err());
        assert!(Figure::from_bench_json(&json!({"a": 1})).is_err());
        assert!(Figure::from_bench_json(&json!(3)).is_err());
        // Rows whose every number is an error: nothing to plot.
        let e = Figure::from_bench_json(&json!([{"dtype": "bf16", "d": 64, "causal": false,
            "seqlen": 512, "tflops": null, "peers": {"flash": null}}]))
        .unwrap_err();
        assert!(e.to_string().contains("no row has a number"), "{e}");
        // A row without its sequence length is an error that says which.
        let e = Figure::from_bench_json(&json!([{"dtype": "bf16", "d": 64, "tflops": 1.0}]))
            .unwrap_err();
        assert!(e.to_string().contains("row 0 has no `seqlen`"), "{e}");
    }

    #[test]
    fn canonical_json_from_an_old_run() {
        // 48 rows, before `pass` existed: 2 dtypes x 2 head dims x causal or not, 6 lengths.
        let f = Figure::from_bench_json(&runs("2026-11-24-h100-final-bench.json")).unwrap();
        assert!(f.title.contains("forward"), "{}", f.title);
        assert_eq!(f.x_label, "sequence length S (B·S = 16384)");
        assert_eq!(f.panels.len(), 8);
        assert_eq!(f.panels[0].title, "bf16 D=64 non-causal");
        for p in &f.panels {
            let names: Vec<&str> = p.series.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(
                names,
                [OURS, "torch flash", "torch efficient", "torch cuDNN"]
            );
            for s in &p.series {
                assert_eq!(s.points.len(), 6, "{} {}", p.title, s.name);
                assert!(s.points.windows(2).all(|w| w[0].x < w[1].x));
            }
        }
        // The first point is the first row's.
        let q = &f.panels[0].series[0].points[0];
        assert_eq!(q.x, 512.0);
        assert!((q.y - 166.67832934538475).abs() < 1e-9);
        let q = &f.panels[0].series[3].points[0];
        assert!((q.y - 392.59297377819576).abs() < 1e-9);
    }

    #[test]
    fn features_json_from_a_run() {
        let f = Figure::from_bench_json(&runs("2026-12-01-h200-features-bench.json")).unwrap();
        assert!(f.title.contains("--features") && f.title.contains("bf16 D=128 H=16"));
        let titles: Vec<&str> = f.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles[0], "dropout");
        assert!(
            titles.contains(&"varlen (S = the longest sequence)"),
            "{titles:?}"
        );
        let dropout = &f.panels[0];
        assert_eq!(dropout.series[0].name, OURS);
        assert!((dropout.series[0].points[0].y - 46.734719345463745).abs() < 1e-9);
        let cudnn = dropout
            .series
            .iter()
            .find(|s| s.name == "torch cuDNN")
            .unwrap();
        assert!((cudnn.points[0].y - 277.2556446694177).abs() < 1e-9);
    }

    #[test]
    fn peer_errors_and_nulls_are_left_out() {
        let doc = json!([
            {"dtype": "f16", "d": 128, "causal": true, "seqlen": 1024, "batch": 16, "pass": "bwd",
             "tflops": 10.0, "peers": {"flash": 20.0, "cudnn": null}},
            {"dtype": "f16", "d": 128, "causal": true, "seqlen": 2048, "batch": 8, "pass": "bwd",
             "tflops": null, "peers": {"flash": {"error": "OOM"}, "cudnn": {"tflops": 30.0}}},
        ]);
        let f = Figure::from_bench_json(&doc).unwrap();
        assert!(f.title.contains("backward"), "{}", f.title);
        let p = &f.panels[0];
        assert_eq!(p.title, "f16 D=128 causal");
        let pts = |n: &str| {
            p.series
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.points.iter().map(|q| (q.x, q.y)).collect::<Vec<_>>())
        };
        assert_eq!(pts(OURS), Some(vec![(1024.0, 10.0)]));
        assert_eq!(pts("torch flash"), Some(vec![(1024.0, 20.0)]));
        assert_eq!(pts("torch cuDNN"), Some(vec![(2048.0, 30.0)]));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(seq_label(512.0), "512");
        assert_eq!(seq_label(1024.0), "1k");
        assert_eq!(seq_label(32768.0), "32k");
        assert_eq!(seq_label(1000.0), "1000");
        assert_eq!(seq_label(1.5), "1.5");
    }

    #[test]
    fn plot_command_round_trips_a_bench_json() {
        let dir = std::env::temp_dir().join(format!("attn_plot_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = runs("2026-11-24-h100-v7-bf16-bench.json");
        let json = dir.join("bench.json");
        std::fs::write(&json, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        // What the bench writes beside its JSON ...
        let beside = write_beside(&json, &doc).unwrap();
        assert_eq!(beside, dir.join("bench.svg"));
        // ... and what `attn plot` makes of the file are the same figure.
        let out = dir.join("again.svg");
        run(&Args {
            json: json.clone(),
            output: Some(out.clone()),
        })
        .unwrap();
        let (a, b) = (
            std::fs::read_to_string(&beside).unwrap(),
            std::fs::read_to_string(&out).unwrap(),
        );
        assert_eq!(a, b);
        assert!(a.contains(OURS) && a.contains("torch efficient") && a.contains("TFLOP/s"));
        // Without -o: beside the JSON.
        std::fs::remove_file(&beside).unwrap();
        run(&Args {
            json: json.clone(),
            output: None,
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&beside).unwrap(), a);
        // A missing file and a file that is not JSON are errors that name the file.
        let e = run(&Args {
            json: dir.join("missing.json"),
            output: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
        std::fs::write(dir.join("bad.json"), "not json").unwrap();
        let e = run(&Args {
            json: dir.join("bad.json"),
            output: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("bad.json is not JSON"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
