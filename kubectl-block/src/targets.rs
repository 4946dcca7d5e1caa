//! Which namespaces a command acts on: names, a label selector, `--all` or `--all-locked`; the
//! protected and system namespaces; the confirmation prompt for bulk actions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail, Result};
use block_controller::config::{is_dns_label, ALWAYS_PROTECTED};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::{Api, ListParams};

use crate::client::{is_not_found, Kube};

/// Page size of every list.
pub const PAGE: u32 = 500;

/// Whether `--all` leaves this namespace out: the always-protected ones, any `kube-*`, the
/// controller's own namespace.
pub fn is_system(name: &str, controller_namespace: &str) -> bool {
    ALWAYS_PROTECTED.contains(&name) || name.starts_with("kube-") || name == controller_namespace
}

/// Whether the controller refuses to touch this namespace whatever its label says.
pub fn is_protected(name: &str, controller_namespace: &str) -> bool {
    ALWAYS_PROTECTED.contains(&name) || name == controller_namespace
}

/// Lists namespaces' metadata matching `selector` (all when `None`), page by page.
pub async fn list_namespaces(kube: &Kube, selector: Option<&str>) -> Result<Vec<ObjectMeta>> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let what = match selector {
        Some(s) => format!("namespaces (selector {s:?})"),
        None => "namespaces".to_string(),
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api
            .list_metadata(&lp)
            .await
            .map_err(|e| kube.error(e, "list", &what))?;
        out.extend(page.items.into_iter().map(|o| o.metadata));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads the named namespaces; fails naming every one that does not exist (nothing is written
/// when one is missing).
pub async fn get_namespaces(kube: &Kube, names: &[String]) -> Result<Vec<ObjectMeta>> {
    let api: Api<Namespace> = Api::all(kube.client.clone());
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let unique: BTreeSet<&String> = names.iter().collect();
    for name in unique {
        if !is_dns_label(name) {
            bail!("{name:?} is not a valid namespace name");
        }
        match api.get_metadata(name).await {
            Ok(o) => found.push(o.metadata),
            Err(e) if is_not_found(&e) => missing.push(name.clone()),
            Err(e) => return Err(kube.error(e, "get", &format!("namespaces/{name}"))),
        }
    }
    match missing.len() {
        0 => Ok(found),
        1 => Err(anyhow!("namespace {:?} not found", missing[0])),
        _ => Err(anyhow!("namespaces not found: {}", missing.join(", "))),
    }
}

/// Label value of `key` on a namespace.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Annotation value of `key` on an object.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A ReplicaSet controlled by a Deployment: the controller leaves it to its Deployment (and the
/// deployment controller copies the Deployment's annotations, `original-replicas` included, onto
/// it), so it is neither "held" nor pending restore work of its own.
pub fn follows_deployment(kind: &str, meta: &ObjectMeta) -> bool {
    kind == "ReplicaSet"
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "Deployment")
}

/// Name of an object (empty when absent, which the API never returns).
pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// `1 namespace`, `2 namespaces`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Asks `Proceed? [y/N]` on the terminal unless `force`; refuses without a terminal.
/// `what` completes "About to …" / "refusing to …", e.g. `lock 3 namespaces directly`.
pub fn confirm(what: &str, names: &[String], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to {what} without confirmation: stdin is not a terminal; re-run with --force (check with --dry-run first)"
        );
    }
    let mut err = std::io::stderr().lock();
    const SHOWN: usize = 20;
    let mut list = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(", … ({} more)", names.len() - SHOWN));
    }
    writeln!(err, "About to {what}: {list}")?;
    write!(err, "Proceed? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("aborted; nothing was changed"),
    }
}

/// Parses a label selector string (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) into the
/// LabelSelector a BlockRequest carries. Refuses an empty selector (it would match every
/// namespace; use --all for that).
pub fn parse_selector(text: &str) -> Result<LabelSelector> {
    let mut match_labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for raw in split_requirements(text)? {
        let req = raw.trim();
        if req.is_empty() {
            bail!("invalid selector {text:?}: empty requirement");
        }
        let expr = |key: &str, op: &str, values: Option<Vec<String>>| -> Result<_> {
            check_key(key, text)?;
            Ok(LabelSelectorRequirement {
                key: key.to_string(),
                operator: op.to_string(),
                values,
            })
        };
        if let Some(key) = req.strip_prefix('!') {
            expressions.push(expr(key.trim(), "DoesNotExist", None)?);
        } else if let Some((key, value)) = req.split_once("!=") {
            expressions.push(expr(
                key.trim(),
                "NotIn",
                Some(vec![value.trim().to_string()]),
            )?);
        } else if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key, text)?;
            if match_labels
                .insert(key.to_string(), value.to_string())
                .is_some()
            {
                bail!("invalid selector {text:?}: {key} is given twice");
            }
        } else if let Some((key, op, values)) = set_requirement(req) {
            let values: Vec<String> = values
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                bail!("invalid selector {text:?}: {key} {op} needs values");
            }
            let op = if op == "in" { "In" } else { "NotIn" };
            expressions.push(expr(key, op, Some(values))?);
        } else {
            expressions.push(expr(req, "Exists", None)?);
        }
    }
    if match_labels.is_empty() && expressions.is_empty() {
        bail!("an empty selector would match every namespace; use --all for that");
    }
    Ok(LabelSelector {
        match_labels: (!match_labels.is_empty()).then_some(match_labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// Splits at commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            bail!("invalid selector {text:?}: unbalanced parentheses");
        }
    }
    if depth != 0 {
        bail!("invalid selector {text:?}: unbalanced parentheses");
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// `key in (a,b)` / `key notin (a,b)` → (key, op, "a,b").
fn set_requirement(req: &str) -> Option<(&str, &str, &str)> {
    let open = req.find('(')?;
    let inner = req[open + 1..].strip_suffix(')')?;
    let mut head = req[..open].split_whitespace();
    let key = head.next()?;
    let op = head.next()?;
    if head.next().is_some() || !(op == "in" || op == "notin") {
        return None;
    }
    Some((key, op, inner))
}

fn check_key(key: &str, text: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 316
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(anyhow!("invalid selector {text:?}: bad label key {key:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        let s = parse_selector("tier=trial, env==prod").expect("parse");
        let labels = s.match_labels.expect("labels");
        assert_eq!(labels["tier"], "trial");
        assert_eq!(labels["env"], "prod");
        let s = parse_selector("a!=b,c in (d, e),f notin (g),h,!i").expect("parse");
        let e = s.match_expressions.expect("expressions");
        let ops: Vec<_> = e
            .iter()
            .map(|r| (r.key.as_str(), r.operator.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("a", "NotIn"),
                ("c", "In"),
                ("f", "NotIn"),
                ("h", "Exists"),
                ("i", "DoesNotExist")
            ]
        );
        assert_eq!(e[1].values.as_deref(), Some(&["d".into(), "e".into()][..]));
        for bad in ["", " ", "a=b,", "x in ()", "x in (a", "a b c", "a=1,a=2"] {
            assert!(parse_selector(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn system_and_protected() {
        for n in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "default",
            "kube-anything",
            "block-system",
        ] {
            assert!(is_system(n, "block-system"), "{n}");
        }
        assert!(!is_system("team-a", "block-system"));
        assert!(is_protected("block-system", "block-system"));
        assert!(!is_protected("kube-anything", "block-system"));
    }
}
