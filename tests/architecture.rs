//! The module structure shows the architecture (`ARCHITECTURE.md`, "Layers").
//!
//! Every `src/**/*.rs` file is read as text — comments and string literals removed,
//! the rest cut into tokens — and the test fails when
//!
//! * a file outside `src/store/redb/` names the `redb` or `postcard` crates (only the
//!   redb backend knows them), or a file outside `src/store/postgres/` the
//!   PostgreSQL driver's crates (`tokio_postgres`, `deadpool_postgres`, …);
//! * the graph of the library's top-level modules has a cycle (an edge X → Y is a
//!   `crate::Y…` path, or a `super::` path that climbs to the crate root and names
//!   Y, in a file of module X);
//! * a module uses a module above it in [`LAYERS`].
//!
//! `lib.rs` is exempt from the module rules; so is the binary (`main.rs` and the
//! modules it declares, `cli/`), which may use anything. Paths in comments (doc
//! links included) are not dependencies. The checker's functions are tested below on
//! small synthetic inputs, so that each check is known to fail when it should.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// The library's top-level modules from the bottom up: a module may use only the
/// modules listed before it. A new module gets its place here (the test fails until
/// it has one). The reasons for the order:
const LAYERS: &[&str] = &[
    // Service-manager notifications: a leaf that uses no other module.
    "systemd", // Keys, signatures, envelopes: bytes and strings only.
    "crypto",
    // Identity syntax, computed ids, DNS discovery (the DNS cache reports its events
    // to an observer instead of knowing metrics).
    "identity",
    // Artifacts, validation, error codes, canonical JSON; uses identity's syntax.
    "protocol",
    // The domain types the logic works with (trust, identity, mailbox records).
    "model", // The reference's JSON forms of those records.
    "wire",
    // Process metrics: labels from protocol's error codes and identity's DNS cache
    // events; recorded into by signing and the server, so it sits below them.
    "metrics", // What each party signs and how a receiver verifies it.
    "signing", // The storage contract (speaking in model types) and its backends.
    "store",   // The configuration: settings, and the stores and resolvers they build.
    "config",
    // The listener, the inbound pipeline and the committer, above the storage contract.
    "server", // The BTPS client (reuses the server's certificate loading).
    "client",
    // Outbound delivery: the outbox worker (in-process through the server's
    // pipeline, remote through the client) and signing for hosted identities.
    "delivery", // The agent client: enrollment and agent actions over a client connection.
    "agent",    // The local operations endpoint: health, readiness, metrics, backup.
    "http",     // The operator's operations and the admin socket.
    "admin",    // The load generator; measures the server from outside.
    "bench",
];

/// Only files under this folder may name these crates.
const REDB_FOLDER: &str = "store/redb/";
const REDB_CRATES: &[&str] = &["redb", "postcard"];

/// The same for the PostgreSQL backend and its driver's crates.
const POSTGRES_FOLDER: &str = "store/postgres/";
const POSTGRES_CRATES: &[&str] = &[
    "tokio_postgres",
    "deadpool_postgres",
    "tokio_postgres_rustls",
    "postgres_types",
    "postgres_protocol",
    "deadpool",
];

// ---------------------------------------------------------------------------------
// The checks on the real source tree.

#[test]
fn only_the_postgres_backend_names_the_postgres_crates() {
    let problems = crate_problems(&source_files(), POSTGRES_FOLDER, POSTGRES_CRATES);
    assert!(
        problems.is_empty(),
        "only src/{POSTGRES_FOLDER} may know the PostgreSQL driver's crates (ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn only_the_redb_backend_names_redb_and_postcard() {
    let problems = redb_problems(&source_files());
    assert!(
        problems.is_empty(),
        "only src/{REDB_FOLDER} may know the redb and postcard crates (ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph(&source_files());
    // The scan sees real dependencies: a scanner that finds nothing would pass
    // every check below.
    for (from, to) in [
        ("server", "store"),
        ("protocol", "identity"),
        ("store", "model"),
    ] {
        assert!(
            graph.edges(from).contains_key(to),
            "the scan found no use of {to} in {from}: the checker is broken"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the top-level modules depend on each other in a cycle:\n{}",
            describe_cycle(&graph, &cycle)
        );
    }
}

#[test]
fn modules_use_only_modules_below_them() {
    let problems = layer_problems(&module_graph(&source_files()), LAYERS);
    assert!(
        problems.is_empty(),
        "the layers of tests/architecture.rs (LAYERS, bottom up) are broken:\n{}",
        problems.join("\n")
    );
}

/// Every `.rs` file under `src/`, as (path relative to `src/` with `/`, text), sorted.
fn source_files() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(root).unwrap();
                let name = relative
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|(name, _)| name == "lib.rs"),
        "no src/lib.rs under {}",
        root.display()
    );
    files
}

// ---------------------------------------------------------------------------------
// The checker.

/// `text` with comments and the contents of string and character literals replaced
/// by spaces (line breaks kept, so that line numbers stay right).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && (i == 0
                || !is_ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i < 2 || !is_ident(chars[i - 2]))))
            && {
                // r"…", r#"…"#, br"…": a raw string (and not a raw identifier r#x).
                let mut j = i + 1;
                while chars.get(j) == Some(&'#') {
                    j += 1;
                }
                chars.get(j) == Some(&'"')
            }
        {
            let mut hashes = 0;
            i += 1;
            while chars[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // the opening quote
            out.push_str("r\"");
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
            out.push('"');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{…}'.
            out.push('\'');
            i += 3;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            out.push('\'');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A one-character literal, '"' included; anything else is a lifetime.
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// A token of code: an identifier or keyword, `::`, or one other character; with its
/// 1-based line.
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(text: &str) -> Vec<Token> {
    let code = code_only(text);
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                text: String::from("::"),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_identifier(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The module path of a file: `store/redb/mod.rs` → `[store, redb]`,
/// `identity/dns.rs` → `[identity, dns]`, `lib.rs` → `[]`.
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.split('/').map(str::to_owned).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    let crate_root = parts.is_empty() && matches!(stem, "lib" | "main");
    if stem != "mod" && !crate_root {
        parts.push(stem.to_owned());
    }
    parts
}

/// The names a file's code reaches at the crate root, with their lines: the first
/// segment after `crate::` (or `$crate::`), each item of a `crate::{…}` group, and
/// the same after `super::` paths that climb to the root (inline `mod x { … }`
/// blocks counted). Names of root items (`crate::BoxFuture`) are included; the
/// caller keeps the modules.
fn root_references(file: &str, text: &str) -> Vec<(String, usize)> {
    let tokens = tokens(text);
    let text_at = |i: usize| tokens.get(i).map_or("", |token| token.text.as_str());
    let file_path = module_path(file);
    let mut inline: Vec<usize> = Vec::new(); // brace depth inside each inline module
    let mut depth = 0;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match text_at(i) {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                while inline.last().is_some_and(|&open| open > depth) {
                    inline.pop();
                }
            }
            "mod" if is_identifier(text_at(i + 1)) && text_at(i + 2) == "{" => {
                inline.push(depth + 1);
            }
            _ => {}
        }
        let starts_path = i == 0 || text_at(i - 1) != "::";
        let mut root_at = None;
        if starts_path && text_at(i) == "crate" && text_at(i + 1) == "::" {
            root_at = Some(i + 2);
        } else if starts_path && text_at(i) == "super" {
            let mut j = i;
            let mut climbs = 0;
            while text_at(j) == "super" && text_at(j + 1) == "::" {
                climbs += 1;
                j += 2;
            }
            if climbs > 0 && climbs == file_path.len() + inline.len() {
                root_at = Some(j);
            }
        }
        if let Some(at) = root_at {
            if text_at(at) == "{" {
                // crate::{a::X, b, c::{d, e}}: the first segment of each item.
                let mut nesting = 0;
                let mut expect_item = true;
                let mut j = at;
                loop {
                    match text_at(j) {
                        "" => break,
                        "{" => {
                            nesting += 1;
                            expect_item = nesting == 1;
                        }
                        "}" => {
                            nesting -= 1;
                            if nesting == 0 {
                                break;
                            }
                        }
                        "," => expect_item = nesting == 1,
                        name if expect_item && is_identifier(name) => {
                            out.push((name.to_owned(), tokens[j].line));
                            expect_item = false;
                        }
                        _ => expect_item = false,
                    }
                    j += 1;
                }
            } else if is_identifier(text_at(at)) {
                out.push((text_at(at).to_owned(), tokens[at].line));
            }
        }
        i += 1;
    }
    out
}

/// Where a file names one of [`REDB_CRATES`]: a path that starts with the crate's
/// name (`redb::…`, `::redb::…`, `use ::redb`), `use redb` and `extern crate redb`. A path through
/// a module of that name (`self::redb::`, `store::redb::`) is the module, not the
/// crate, and `mod redb;` declares the module.
fn redb_problems(files: &[(String, String)]) -> Vec<String> {
    crate_problems(files, REDB_FOLDER, REDB_CRATES)
}

/// Where a file outside `folder` names one of `crates` (the rules of
/// [`redb_problems`]).
fn crate_problems(files: &[(String, String)], folder: &str, crates: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, text) in files {
        if file.starts_with(folder) {
            continue;
        }
        let tokens = tokens(text);
        let text_at = |i: Option<usize>| {
            i.and_then(|i| tokens.get(i))
                .map_or("", |token| token.text.as_str())
        };
        for (i, token) in tokens.iter().enumerate() {
            if !crates.contains(&token.text.as_str()) {
                continue;
            }
            let before = text_at(i.checked_sub(1));
            let before_that = text_at(i.checked_sub(2));
            let after = text_at(Some(i + 1));
            let names_crate = match before {
                "use" | "crate" => true,
                "::" => !is_identifier(before_that) || before_that == "use",
                _ => after == "::",
            };
            if names_crate {
                problems.push(format!(
                    "src/{file}:{}: names the {} crate",
                    token.line, token.text
                ));
            }
        }
    }
    problems
}

/// The top-level modules of the library and, for each, the modules it uses: to each
/// one, the first place (`src/file:line`) that uses it.
#[derive(Debug, Default)]
struct Graph {
    nodes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Graph {
    fn edges(&self, from: &str) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.nodes.get(from).unwrap_or(&NONE)
    }
}

/// Builds the [`Graph`] of the library from its files. The library's modules are the
/// top-level folders and files of `src/`, less `lib.rs`, `main.rs` and the modules
/// `main.rs` declares (the binary's).
fn module_graph(files: &[(String, String)]) -> Graph {
    let binary: BTreeSet<String> = files
        .iter()
        .filter(|(file, _)| file == "main.rs")
        .flat_map(|(_, text)| {
            let tokens = tokens(text);
            tokens
                .windows(3)
                .filter(|w| w[0].text == "mod" && is_identifier(&w[1].text) && w[2].text == ";")
                .map(|w| w[1].text.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    let top = |file: &str| module_path(file).into_iter().next();
    let mut graph = Graph::default();
    for (file, _) in files {
        if let Some(module) = top(file)
            && !binary.contains(&module)
        {
            graph.nodes.entry(module).or_default();
        }
    }
    for (file, text) in files {
        let Some(module) = top(file) else {
            continue; // lib.rs, main.rs
        };
        if binary.contains(&module) {
            continue;
        }
        for (name, line) in root_references(file, text) {
            if name != module && graph.nodes.contains_key(&name) {
                graph
                    .nodes
                    .get_mut(&module)
                    .unwrap()
                    .entry(name)
                    .or_insert_with(|| format!("src/{file}:{line}"));
            }
        }
    }
    graph
}

/// A cycle of the graph, if it has one: its modules in order, the first repeated at
/// the end.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.edges(node).keys() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .nodes
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

/// `a → b → a`, then each edge with the place that makes it.
fn describe_cycle(graph: &Graph, cycle: &[String]) -> String {
    let mut out = format!("  {}", cycle.join(" → "));
    for pair in cycle.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let _ = write!(
            out,
            "\n  {from} → {to}: {}",
            graph.edges(from).get(to).map_or("?", String::as_str)
        );
    }
    out
}

/// Every edge from a module to one above it in `layers`, every module missing from
/// `layers`, and every entry of `layers` that is no module.
fn layer_problems(graph: &Graph, layers: &[&str]) -> Vec<String> {
    let rank = |module: &str| layers.iter().position(|layer| *layer == module);
    let mut problems = Vec::new();
    for module in graph.nodes.keys() {
        if rank(module).is_none() {
            problems.push(format!(
                "module {module} has no place in LAYERS: add it above the modules it uses"
            ));
        }
    }
    for layer in layers {
        if !graph.nodes.contains_key(*layer) {
            problems.push(format!("LAYERS names {layer}, which is no module of src/"));
        }
    }
    for (from, edges) in &graph.nodes {
        for (to, place) in edges {
            if let (Some(low), Some(high)) = (rank(from), rank(to))
                && high > low
            {
                problems.push(format!(
                    "{place}: {from} uses {to}, which is above it in LAYERS"
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------
// The checker on synthetic inputs: each check fails when it should.

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect()
}

fn graph_of(list: &[(&str, &str)]) -> Graph {
    module_graph(&files(list))
}

#[test]
fn comments_and_literals_are_not_code() {
    let text = "let a = \"crate::x // no\"; // crate::y\n/* crate::z /* nested */ crate::w */\n\
                let b = r#\"crate::v \"quoted\" \"#; let c = '\"'; let d: &'static str = \"\\\"\";\n\
                let e = crate::real;";
    let code = code_only(text);
    assert!(!code.contains("crate::x") && !code.contains("crate::y"));
    assert!(!code.contains("crate::z") && !code.contains("crate::w"));
    assert!(!code.contains("crate::v"));
    assert!(code.contains("crate::real"));
    assert_eq!(code.lines().count(), text.lines().count());
    let references = root_references("a.rs", text);
    assert_eq!(references, [(String::from("real"), 4)]);
    let escaped = code_only("let q = '\\''; let s = \"crate::no\"; let t = '\\u{22}';");
    assert!(!escaped.contains("crate::no"), "{escaped}");
}

#[test]
fn module_paths_follow_the_file_layout() {
    assert_eq!(module_path("store/redb/mod.rs"), ["store", "redb"]);
    assert_eq!(module_path("identity/dns.rs"), ["identity", "dns"]);
    assert_eq!(
        module_path("identity/dns/cache.rs"),
        ["identity", "dns", "cache"]
    );
    assert_eq!(module_path("signing.rs"), ["signing"]);
    assert!(module_path("lib.rs").is_empty());
}

#[test]
fn references_are_found_in_groups_and_through_super() {
    let names = |file: &str, text: &str| -> Vec<String> {
        root_references(file, text)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    assert_eq!(
        names(
            "server/x.rs",
            "use crate::{model::A, wire::{b, c}, store};\nfn f() { $crate::http::g(); }"
        ),
        ["model", "wire", "store", "http"]
    );
    // Three levels up from identity/dns/cache.rs is the crate root.
    assert_eq!(
        names(
            "identity/dns/cache.rs",
            "use super::super::super::metrics::E;"
        ),
        ["metrics"]
    );
    assert!(names("identity/dns/cache.rs", "use super::super::ids::f;").is_empty());
    // An inline module adds a level; leaving it takes it away again.
    assert_eq!(
        names(
            "signing.rs",
            "mod tests { use super::store::X; }\nuse super::metrics::Y;"
        ),
        ["metrics"]
    );
    // A path through a module is no root reference; pub(crate) is no path.
    assert!(names("server/x.rs", "pub(crate) use other::crate_like::y;").is_empty());
}

#[test]
fn naming_redb_outside_its_folder_is_reported() {
    let problems = redb_problems(&files(&[
        ("server/x.rs", "use redb::Table;"),
        (
            "admin/y.rs",
            "fn f() { let v = postcard::to_allocvec(&1); }",
        ),
        ("http.rs", "fn f() { ::redb::Database::create(p); }"),
        (
            "config/z.rs",
            "extern crate redb;\nuse postcard;\nuse ::redb::Table;",
        ),
    ]));
    assert_eq!(
        problems,
        [
            "src/server/x.rs:1: names the redb crate",
            "src/admin/y.rs:1: names the postcard crate",
            "src/http.rs:1: names the redb crate",
            "src/config/z.rs:1: names the redb crate",
            "src/config/z.rs:2: names the postcard crate",
            "src/config/z.rs:3: names the redb crate",
        ]
    );
}

#[test]
fn naming_the_postgres_crates_outside_their_folder_is_reported() {
    let problems = crate_problems(
        &files(&[
            ("server/x.rs", "use tokio_postgres::Client;"),
            (
                "cli/y.rs",
                "fn f() { deadpool_postgres::Pool::builder(m); }",
            ),
            (
                "store/mod.rs",
                "mod postgres;\npub use postgres::PgStorage;",
            ),
            ("store/postgres/mod.rs", "use tokio_postgres::Config;"),
        ]),
        POSTGRES_FOLDER,
        POSTGRES_CRATES,
    );
    assert_eq!(
        problems,
        [
            "src/server/x.rs:1: names the tokio_postgres crate",
            "src/cli/y.rs:1: names the deadpool_postgres crate",
        ]
    );
}

#[test]
fn the_redb_module_and_the_backend_itself_are_allowed() {
    let problems = redb_problems(&files(&[
        (
            "store/mod.rs",
            "mod redb;\npub use self::redb::{RedbStore};\n// redb::Table in a comment\n\
             const NAME: &str = \"redb::x\";",
        ),
        (
            "server/x.rs",
            "use crate::store::redb::Snapshot; use super::redb::Y;",
        ),
        (
            "store/redb/mod.rs",
            "use redb::{Database, TableDefinition};",
        ),
        ("store/redb/codec/mod.rs", "postcard::to_allocvec(&v)"),
    ]));
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_cycle_is_reported_with_its_places() {
    let graph = graph_of(&[
        ("protocol/mod.rs", "use crate::identity::Identity;"),
        (
            "identity/dns/cache.rs",
            "\nuse crate::metrics::DnsCacheEvent;",
        ),
        ("metrics.rs", "use crate::protocol::ErrorCode;"),
        ("crypto/mod.rs", ""),
    ]);
    let cycle = find_cycle(&graph).expect("the cycle is found");
    assert_eq!(cycle, ["identity", "metrics", "protocol", "identity"]);
    let text = describe_cycle(&graph, &cycle);
    assert!(
        text.contains("identity → metrics → protocol → identity"),
        "{text}"
    );
    assert!(
        text.contains("identity → metrics: src/identity/dns/cache.rs:2"),
        "{text}"
    );
}

#[test]
fn an_acyclic_graph_has_no_cycle() {
    let graph = graph_of(&[
        ("protocol/mod.rs", "use crate::identity::Identity;"),
        ("identity/dns/cache.rs", "use super::DnsError;"),
        (
            "metrics.rs",
            "use crate::protocol::ErrorCode;\npub use crate::identity::E;",
        ),
    ]);
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(graph.edges("metrics").len(), 2);
}

#[test]
fn the_binary_and_the_crate_root_are_exempt() {
    let graph = graph_of(&[
        ("main.rs", "mod cli;\nfn main() { btps::server::run(); }"),
        ("cli/serve.rs", "use crate::cli::x;"),
        (
            "lib.rs",
            "pub mod store;\npub mod crypto;\npub use crate::store::X;",
        ),
        ("store/mod.rs", "use crate::crypto::Key;"),
        ("crypto/mod.rs", ""),
    ]);
    assert_eq!(graph.nodes.keys().collect::<Vec<_>>(), ["crypto", "store"]);
    assert!(layer_problems(&graph, &["crypto", "store"]).is_empty());
}

#[test]
fn using_a_higher_layer_is_reported() {
    let graph = graph_of(&[
        ("crypto/mod.rs", ""),
        ("store/mod.rs", "use crate::crypto::Key;"),
        ("server/mod.rs", "use crate::store::Storage;"),
        (
            "model/record.rs",
            "\n\nfn f() -> crate::store::StoreError { todo() }",
        ),
    ]);
    let problems = layer_problems(&graph, &["crypto", "model", "store", "server"]);
    assert_eq!(
        problems,
        ["src/model/record.rs:3: model uses store, which is above it in LAYERS"]
    );
}

#[test]
fn modules_missing_from_the_layers_are_reported() {
    let graph = graph_of(&[("crypto/mod.rs", ""), ("extra.rs", "")]);
    let problems = layer_problems(&graph, &["crypto", "gone"]);
    assert_eq!(
        problems,
        [
            "module extra has no place in LAYERS: add it above the modules it uses",
            "LAYERS names gone, which is no module of src/",
        ]
    );
}
