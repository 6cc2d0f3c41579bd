//! The TA (`ta/`, a cargo workspace of its own, cross-built for the TEE) and
//! the host workspace (the simulator backend, the tests, the fuzz and bench
//! harnesses) compile the same key engine, each from its own lock file. What
//! is tested and fuzzed on the host must be what runs in the TEE: both lock
//! files must pin every crate of the engine's dependency closure to the same
//! version and checksum.
//!
//! The closure is walked from `hakeys-engine` in each lock file. The host's
//! lock file may hold more for the engine than the TA's (the engine's
//! dev-dependencies, features the host crates turn on); only crates in the
//! TA's closure are compared, and each must be in the host's closure with the
//! same versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One `[[package]]` of a lock file.
#[derive(Debug)]
struct Package {
    name: String,
    version: String,
    checksum: Option<String>,
    /// As written: `name`, `name version` or `name version (source)`.
    dependencies: Vec<String>,
}

/// Each crate of a closure: name to its (version, checksum) pairs (more than
/// one when two major versions are in the tree).
type Closure = BTreeMap<String, BTreeSet<(String, Option<String>)>>;

fn parse_lock(text: &str, what: &str) -> Vec<Package> {
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{what} is not TOML: {e}"));
    let packages = table
        .get("package")
        .and_then(|p| p.as_array())
        .unwrap_or_else(|| panic!("{what} has no [[package]] entries"));
    packages
        .iter()
        .map(|p| {
            let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            Package {
                name: field("name").unwrap_or_else(|| panic!("{what}: a package without a name")),
                version: field("version")
                    .unwrap_or_else(|| panic!("{what}: a package without a version")),
                checksum: field("checksum"),
                dependencies: p
                    .get("dependencies")
                    .and_then(|d| d.as_array())
                    .map(|d| {
                        d.iter()
                            .map(|s| s.as_str().expect("dependency is a string").to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The package a dependency entry names: by name alone when the lock file
/// holds one version of it, otherwise by name and version.
fn resolve<'a>(packages: &'a [Package], entry: &str, what: &str) -> &'a Package {
    let mut words = entry.split(' ');
    let name = words.next().unwrap_or_default();
    let version = words.next();
    let found: Vec<&Package> = packages
        .iter()
        .filter(|p| p.name == name && version.is_none_or(|v| p.version == v))
        .collect();
    match found.as_slice() {
        [one] => one,
        [] => panic!("{what}: no package for dependency `{entry}`"),
        _ => panic!("{what}: dependency `{entry}` is ambiguous"),
    }
}

fn closure(packages: &[Package], root: &str, what: &str) -> Closure {
    let mut seen = BTreeSet::new();
    let mut out = Closure::new();
    let mut todo = vec![resolve(packages, root, what)];
    while let Some(p) = todo.pop() {
        if !seen.insert((p.name.as_str(), p.version.as_str())) {
            continue;
        }
        out.entry(p.name.clone())
            .or_default()
            .insert((p.version.clone(), p.checksum.clone()));
        todo.extend(p.dependencies.iter().map(|d| resolve(packages, d, what)));
    }
    out
}

fn describe(versions: Option<&BTreeSet<(String, Option<String>)>>) -> String {
    match versions {
        None => "nothing (not in its closure)".into(),
        Some(v) => v
            .iter()
            .map(|(version, sum)| {
                format!("{version} (checksum {})", sum.as_deref().unwrap_or("none"))
            })
            .collect::<Vec<_>>()
            .join(" and "),
    }
}

/// Every crate of `ta` whose versions or checksums differ in `host`, one
/// line each, naming the crate and both sides.
fn disagreements(ta: &Closure, host: &Closure) -> Vec<String> {
    ta.iter()
        .filter(|(name, versions)| host.get(*name) != Some(versions))
        .map(|(name, versions)| {
            format!(
                "crate `{name}`: ta/Cargo.lock has {}, Cargo.lock has {}",
                describe(Some(versions)),
                describe(host.get(name)),
            )
        })
        .collect()
}

fn engine_closure(lock: &Path) -> Closure {
    let what = lock.display().to_string();
    let text = std::fs::read_to_string(lock).unwrap_or_else(|e| panic!("read {what}: {e}"));
    closure(&parse_lock(&text, &what), "hakeys-engine", &what)
}

#[test]
fn ta_and_host_lock_files_pin_the_same_engine_dependencies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ta = engine_closure(&root.join("ta/Cargo.lock"));
    let host = engine_closure(&root.join("Cargo.lock"));
    // Not vacuous: the walk reached the protocol crate and the crypto.
    for name in [
        "hakeys-engine",
        "hakeys-proto",
        "p256",
        "aes-gcm",
        "hkdf",
        "sha2",
    ] {
        assert!(ta.contains_key(name), "ta/Cargo.lock closure lacks {name}");
        assert!(host.contains_key(name), "Cargo.lock closure lacks {name}");
    }
    let bad = disagreements(&ta, &host);
    assert!(
        bad.is_empty(),
        "the TA and the host would build different engines:\n  {}\n\
         align ta/Cargo.lock with `cargo update -p NAME --precise VERSION` in ta/ \
         (or the host's Cargo.lock, whichever is behind)",
        bad.join("\n  ")
    );
}

const LOCK_A: &str = r#"
version = 4

[[package]]
name = "hakeys-engine"
version = "0.1.0"
dependencies = ["leaf", "twice 1.0.0"]

[[package]]
name = "leaf"
version = "0.3.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aaaa"

[[package]]
name = "twice"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "bbbb"

[[package]]
name = "twice"
version = "2.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "cccc"

[[package]]
name = "unrelated"
version = "9.0.0"
"#;

#[test]
fn the_walk_follows_versioned_entries_and_the_report_names_both_sides() {
    let a = closure(&parse_lock(LOCK_A, "a"), "hakeys-engine", "a");
    assert_eq!(
        a.keys().map(String::as_str).collect::<Vec<_>>(),
        ["hakeys-engine", "leaf", "twice"]
    );
    assert_eq!(
        a["twice"],
        BTreeSet::from([("1.0.0".to_owned(), Some("bbbb".to_owned()))])
    );
    assert!(disagreements(&a, &a).is_empty());

    let b_text = LOCK_A.replace(
        "name = \"leaf\"\nversion = \"0.3.1\"",
        "name = \"leaf\"\nversion = \"0.3.2\"",
    );
    let b = closure(&parse_lock(&b_text, "b"), "hakeys-engine", "b");
    assert_eq!(
        disagreements(&a, &b),
        ["crate `leaf`: ta/Cargo.lock has 0.3.1 (checksum aaaa), Cargo.lock has 0.3.2 (checksum aaaa)"]
    );
    // A crate the host's closure does not have at all is a disagreement too;
    // extra crates on the host's side are not.
    let mut smaller = a.clone();
    smaller.remove("leaf");
    assert_eq!(
        disagreements(&a, &smaller),
        ["crate `leaf`: ta/Cargo.lock has 0.3.1 (checksum aaaa), Cargo.lock has nothing (not in its closure)"]
    );
    assert!(disagreements(&smaller, &a).is_empty());
}
