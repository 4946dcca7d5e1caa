//! Just enough of the Prometheus text format to read counters, gauges and histogram sums.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every sample line; comments and unparsable lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close]),
                &line[close + 1..],
            )
        }
        None => {
            let (n, r) = line.split_once(' ')?;
            (n, Vec::new(), r)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
    out
}

/// Sum of the samples named `name`.
pub fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let total = samples
        .iter()
        .filter(|s| s.name == name)
        .inspect(|_| found = true)
        .map(|s| s.value)
        .sum();
    found.then_some(total)
}

/// Sum of the samples named `name`, grouped by the value of label `key`.
pub fn by_label(samples: &[Sample], name: &str, key: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        *out.entry(s.label(key).unwrap_or("").to_string())
            .or_insert(0.0) += s.value;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_values_and_groups() {
        let text = "# HELP x\n\
            block_controller_api_requests_total{code=\"200\",resource=\"namespaces\",verb=\"patch\",replica=\"a\"} 3\n\
            block_controller_api_requests_total{code=\"201\",resource=\"resourcequotas\",verb=\"create\",replica=\"a\"} 2\n\
            block_controller_api_requests_total{code=\"200\",resource=\"pods\",verb=\"patch\",replica=\"a\"} 1\n\
            block_controller_owned_ranges{replica=\"a\"} 128\n\
            apiserver_request_total{code=\"200\",verb=\"LIST\",resource=\"a\\\"b\"} 7e0\n\
            up 1\n";
        let s = parse(text);
        assert_eq!(s.len(), 6);
        assert_eq!(sum(&s, "block_controller_owned_ranges"), Some(128.0));
        assert_eq!(sum(&s, "missing"), None);
        let by = by_label(&s, "block_controller_api_requests_total", "verb");
        assert_eq!(by.get("patch"), Some(&4.0));
        assert_eq!(by.get("create"), Some(&2.0));
        assert_eq!(s[4].label("resource"), Some("a\"b"));
        assert_eq!(s[4].value, 7.0);
        assert_eq!(s[5].labels, vec![]);
    }
}
