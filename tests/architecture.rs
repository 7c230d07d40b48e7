//! ARCHITECTURE.md's invariants about who knows what, read off the source:
//! each outside crate that speaks a transport or an engine is named only
//! in its room (actix only by the HTTP edge and the wiring, tonic and
//! Envoy's protos only by gRPC, outbound HTTP only by the gateway, the
//! chat client and the webhook channel, SMTP only by the e-mail channel,
//! sled, PostgreSQL, bincode and Redis only by their engines); `metering/`
//! and everything below it name no edge; and no module imports, at any
//! depth, a module that imports it back (`use crate::` and `super::`
//! paths, test modules left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, as (module path, text without comments
/// and without its `#[cfg(test)] mod tests`).
fn sources() -> Vec<(Vec<String>, String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            (module, code_of(&text), p)
        })
        .collect()
}

/// `text` without comments and without the test module at its end.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Whether `code` names the outside crate `name` as a path (`name::`, not
/// `self::name::` or `x_name::`).
fn names_crate(code: &str, name: &str) -> bool {
    let pat = format!("{name}::");
    code.match_indices(&pat).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

#[test]
fn each_outside_crate_is_known_only_in_its_room() {
    // (crate, the files and folders under src/ that may name it)
    let rooms: &[(&str, &[&str])] = &[
        ("actix_web", &["http/", "app/", "cli/"]),
        ("tonic", &["grpc/"]),
        ("envoy_types", &["grpc/"]),
        (
            "reqwest",
            &[
                "http/gateway/",
                "http/api/chat.rs",
                "alerts/webhook.rs",
                "cli/admin.rs",
            ],
        ),
        ("lettre", &["alerts/email.rs"]),
        ("tokio_postgres", &["store/postgres/"]),
        ("deadpool_postgres", &["store/postgres/"]),
        ("sled", &["store/"]),
        ("bincode", &["store/codec.rs"]),
        ("redis", &["cluster/"]),
    ];
    let mut wrong = Vec::new();
    for (_, code, path) in sources() {
        let rel = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (name, allowed) in rooms {
            if names_crate(&code, name) && !allowed.iter().any(|a| rel.starts_with(a)) {
                wrong.push(format!("src/{rel} names {name}"));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The module `path` (from `cur`, the module whose scope the path is
/// written in) names, as the longest existing module it starts with.
fn resolve(modules: &BTreeSet<Vec<String>>, cur: &[String], path: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = path.split("::").collect();
    let mut full: Vec<String> = match parts.first()? {
        &"crate" => Vec::new(),
        &"super" | &"self" => cur.to_vec(),
        _ => return None,
    };
    let mut rest = &parts[..];
    if rest[0] == "crate" || rest[0] == "self" {
        rest = &rest[1..];
    }
    while rest.first() == Some(&"super") {
        full.pop();
        rest = &rest[1..];
    }
    full.extend(rest.iter().map(|s| s.to_string()));
    (1..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// Every `crate::`/`super::`/`self::` path in `code`, `use` groups
/// expanded.
fn paths_in(code: &str) -> Vec<String> {
    fn expand(prefix: &str, group: &str, out: &mut Vec<String>) {
        let mut depth = 0;
        let mut item = String::new();
        let mut items = Vec::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        for it in items {
            let it: String = it.chars().filter(|c| !c.is_whitespace()).collect();
            match it.find("::{") {
                Some(i) if it.ends_with('}') => expand(
                    &format!("{prefix}{}::", &it[..i]),
                    &it[i + 3..it.len() - 1],
                    out,
                ),
                _ => out.push(format!("{prefix}{it}")),
            }
        }
    }
    let mut out = Vec::new();
    for stmt in code.split("use ").skip(1) {
        let Some(end) = stmt.find(';') else { continue };
        let u: String = stmt[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Some(i) = u.find("::{") {
            if u.ends_with('}') {
                expand(&u[..i + 2], &u[i + 3..u.len() - 1], &mut out);
                continue;
            }
        }
        out.push(u);
    }
    // Paths written inline.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0
                && (bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':')
            {
                continue;
            }
            let end = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| i + e);
            out.push(code[i..end].trim_end_matches(':').to_string());
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let files = sources();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _, _)| m.clone()).collect();
    // Modules compiled for tests only (`#[cfg(test)] mod x;`: the contract
    // suite, the simulation, the harness) may reach anywhere.
    let mut test_only: Vec<Vec<String>> = Vec::new();
    for (module, code, _) in &files {
        let lines: Vec<&str> = code.lines().map(str::trim).collect();
        for (i, l) in lines.iter().enumerate() {
            if *l != "#[cfg(test)]" {
                continue;
            }
            let decl = lines[i + 1..].iter().find(|l| !l.starts_with("#["));
            if let Some(name) = decl
                .and_then(|d| d.strip_suffix(';'))
                .and_then(|d| d.rsplit("mod ").next())
            {
                let mut m = module.clone();
                m.push(name.trim().to_string());
                test_only.push(m);
            }
        }
    }
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, code, path) in &files {
        if code.contains("#![cfg(test)]") || test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let is_dir = matches!(
            path.file_stem().and_then(|s| s.to_str()),
            Some("mod" | "lib")
        );
        let scope: Vec<String> = if is_dir {
            module.clone()
        } else {
            module[..module.len().saturating_sub(1)].to_vec()
        };
        for p in paths_in(code) {
            let p = p.split(" as ").next().unwrap_or(&p).to_string();
            if let Some(target) = resolve(&modules, &scope, &p) {
                // A module may use its own ancestors and descendants.
                if target.starts_with(module) || module.starts_with(&target) {
                    continue;
                }
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // At every depth: modules cut to `depth` segments.
    let mut cycles = Vec::new();
    for depth in 1..=4 {
        let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (a, bs) in &edges {
            for b in bs {
                let (ca, cb) = (
                    a[..a.len().min(depth)].to_vec(),
                    b[..b.len().min(depth)].to_vec(),
                );
                if ca != cb && !ca.starts_with(&cb) && !cb.starts_with(&ca) {
                    g.entry(ca).or_default().insert(cb);
                }
            }
        }
        for (a, bs) in &g {
            for b in bs {
                // b reaches a?
                let mut seen = BTreeSet::new();
                let mut todo = vec![b.clone()];
                while let Some(n) = todo.pop() {
                    if &n == a {
                        cycles.push(format!("{} <-> {}", a.join("::"), b.join("::")));
                        break;
                    }
                    if seen.insert(n.clone()) {
                        todo.extend(g.get(&n).into_iter().flatten().cloned());
                    }
                }
            }
        }
    }
    cycles.sort();
    cycles.dedup();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_metering_room_and_below_name_no_edge() {
    let below = [
        "metering",
        "quota",
        "registry",
        "store",
        "usage",
        "rollup",
        "analytics",
        "model",
        "cluster",
        "pricing",
        "clock",
    ];
    let mut wrong = Vec::new();
    for (module, code, path) in sources() {
        if !module.first().is_some_and(|m| below.contains(&m.as_str())) {
            continue;
        }
        for edge in ["crate::http", "crate::grpc", "crate::alerts"] {
            if code.contains(edge) {
                wrong.push(format!("{} names {edge}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
