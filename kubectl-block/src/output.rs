//! Output formats: aligned tables (kubectl style), `-o wide`, and stable JSON/YAML documents.

use anyhow::{Context as _, Result};
use serde::Serialize;

/// `-o` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The table with extra columns.
    Wide,
    /// A JSON document (schema in the README).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// How a command prints: table, wide table, or a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Table (default).
    Table,
    /// Table with extra columns.
    Wide,
    /// JSON or YAML document.
    Document(Format),
}

impl Mode {
    /// From the `-o` flag.
    pub fn from_flag(f: Option<Format>) -> Mode {
        match f {
            None => Mode::Table,
            Some(Format::Wide) => Mode::Wide,
            Some(f) => Mode::Document(f),
        }
    }
}

/// Prints `value` as JSON (pretty, trailing newline) or YAML.
pub fn print_document<T: Serialize>(value: &T, format: Format) -> Result<()> {
    let text = match format {
        Format::Yaml => serde_yaml::to_string(value).context("rendering YAML")?,
        _ => {
            let mut s = serde_json::to_string_pretty(value).context("rendering JSON")?;
            s.push('\n');
            s
        }
    };
    emit(&text);
    Ok(())
}

/// Writes to stdout, ignoring failures: output is best effort, the command's work is not.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// A table of left-aligned columns separated by three spaces, as kubectl prints.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
    indent: usize,
}

impl Table {
    /// A table with these headers.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.as_ref().to_string()).collect()],
            indent: 0,
        }
    }

    /// Indents every line by `n` spaces.
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The aligned text, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = " ".repeat(self.indent);
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A duration in seconds in the two largest units: `6d23h`, `5h3m`, `4m10s`, `12s`.
pub fn short_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// kubectl's AGE: one unit below two days (`45s`, `12m`, `5h`), then days.
pub fn age(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 7200 {
        format!("{}m", secs / 60)
    } else if secs < 172_800 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    }
}

/// `-` for a missing value.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(short_duration(7 * 86_400 - 1), "6d23h");
        assert_eq!(short_duration(5 * 3600 + 3 * 60 + 9), "5h3m");
        assert_eq!(short_duration(250), "4m10s");
        assert_eq!(short_duration(12), "12s");
        assert_eq!(short_duration(-5), "0s");
        assert_eq!(age(30), "30s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(3 * 86_400), "3d");
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&["NAME", "STATE"]);
        t.row(vec!["a-long-name".into(), "locked".into()]);
        t.row(vec!["b".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "NAME          STATE\na-long-name   locked\nb             -\n"
        );
    }
}
