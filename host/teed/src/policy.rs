//! The policy file: which callers may use which operations on which
//! namespaces, and the per-caller limits. A rule names its callers by
//! kernel uid and gid, by the name of the Docker container they run in, or
//! by a Home Assistant role built from container names (Home Assistant
//! Core, the Supervisor, an add-on). Format and shipped default in
//! `docs/daemon.md`; the default is `systemd/teed-policy.toml`.
//!
//! Default deny: a caller no rule matches may do nothing. Namespaces under
//! `boot/` are never served at run time: a policy naming one is refused at
//! load, and the daemon refuses them whatever the policy says.
//!
//! Who the caller is comes from the identity layer (`identity/`): this
//! module only compares it with the rules.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hakeys_engine::namespace;
use serde::Deserialize;

use teed_protocol::Op;

use crate::identity::docker::{is_container_name, MAX_NAME};

/// The policy file format version this daemon reads.
pub const POLICY_VERSION: u32 = 1;
/// The largest policy file read.
pub const MAX_POLICY_FILE: u64 = 1024 * 1024;

/// Per-caller limits (a caller is a container, or a uid outside
/// containers). Every field has a default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Token bucket: sustained requests per second per caller ...
    pub requests_per_second: f64,
    /// ... and the burst above it.
    pub burst: u32,
    /// Connections open at once, all callers together.
    pub max_connections: usize,
    /// Connections open at once per caller.
    pub max_connections_per_caller: usize,
    /// Connections open at once from callers that no rule names, all of
    /// them together: they can never take the slots of the callers the
    /// policy serves.
    pub max_unnamed_connections: usize,
    /// How long a connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long a request may take to arrive once its first byte has, and
    /// how long a response may take to be taken.
    pub request_timeout: Duration,
    /// Failed unseals forgiven before backing off.
    pub failed_unseals_free: u32,
    /// The first back-off; doubles with each further failure.
    pub failed_unseal_backoff: Duration,
    /// Failed unseals (counted in one failure window) that lock the caller out.
    pub failed_unseals_lockout: u32,
    /// How long a lockout lasts.
    pub lockout: Duration,
    /// Failures older than this (since the last one) are forgotten.
    pub failure_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: 50.0,
            burst: 100,
            max_connections: 64,
            max_connections_per_caller: 16,
            max_unnamed_connections: 4,
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            failed_unseals_free: 5,
            failed_unseal_backoff: Duration::from_millis(250),
            failed_unseals_lockout: 20,
            lockout: Duration::from_secs(300),
            failure_window: Duration::from_secs(600),
        }
    }
}

/// The most connections the daemon will ever hold, whatever the file says.
pub const MAX_CONNECTIONS_CAP: usize = 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    max_connections: Option<u32>,
    /// The name before callers could be containers; means the same.
    max_connections_per_uid: Option<u32>,
    max_connections_per_caller: Option<u32>,
    max_unnamed_connections: Option<u32>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    failed_unseals_free: Option<u32>,
    failed_unseal_backoff_ms: Option<u64>,
    failed_unseals_lockout: Option<u32>,
    lockout_seconds: Option<u64>,
    failure_window_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    uid: Option<u32>,
    gid: Option<u32>,
    container: Option<String>,
    role: Option<String>,
    addon: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    operations: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
    #[serde(default)]
    addons: BTreeMap<String, u32>,
}

/// The placeholder for the caller's add-on slug in a rule's namespaces.
pub const SLUG: &str = "{slug}";

/// A namespace pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// Exactly this namespace.
    Exact(String),
    /// Any namespace strictly below this one (`addon/x/*`).
    Under(String),
}

impl Pattern {
    /// `text` as a pattern; with `slug` allowed, whole segments `{slug}`
    /// stand for the caller's add-on slug.
    fn parse(text: &str, slug_allowed: bool) -> Result<Pattern, String> {
        let (base, p) = match text.strip_suffix("/*") {
            Some(base) => (base, Pattern::Under(base.to_string())),
            None => (text, Pattern::Exact(text.to_string())),
        };
        if base.contains(SLUG) {
            if !slug_allowed {
                return Err(format!(
                    "namespace pattern `{text}` uses {SLUG}, which only a rule for add-ons \
                     (`role = \"addon\"` or `addon = \"<slug>\"`) may use"
                ));
            }
            if base.split('/').any(|seg| seg.contains(SLUG) && seg != SLUG) {
                return Err(format!(
                    "namespace pattern `{text}`: {SLUG} must be a whole segment (`addon/{SLUG}`)"
                ));
            }
        }
        // Checked with the longest slug in place.
        let sample = base.replace(SLUG, "x");
        if !namespace::is_valid(&sample) {
            return Err(format!(
                "namespace pattern `{text}` is not a namespace or `namespace/*` \
                 (1-64 chars of a-z 0-9 . _ -, segments separated by /)"
            ));
        }
        if base == "boot" || namespace::is_boot(base) || base.split('/').next() == Some("boot") {
            return Err(format!(
                "namespace pattern `{text}` is under boot/: boot secrets are never served \
                 at run time, whatever the policy says; remove it"
            ));
        }
        Ok(p)
    }

    /// Does `ns` match, with `slug` (the caller's add-on slug, if it has one)
    /// in place of `{slug}`?
    fn matches(&self, ns: &str, slug: Option<&str>) -> bool {
        let (base, under) = match self {
            Pattern::Exact(b) => (b, false),
            Pattern::Under(b) => (b, true),
        };
        let base = if base.contains(SLUG) {
            match slug {
                Some(s) => std::borrow::Cow::Owned(base.replace(SLUG, s)),
                None => return false,
            }
        } else {
            std::borrow::Cow::Borrowed(base.as_str())
        };
        if under {
            ns.strip_prefix(base.as_ref())
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
        } else {
            ns == base
        }
    }
}

/// The Home Assistant roles a rule can name (`role = "..."`).
pub const ROLES: [&str; 3] = ["homeassistant", "supervisor", "addon"];

/// The container Home Assistant Core runs in on HA OS.
pub const CORE_CONTAINER: &str = "homeassistant";
/// The container the Supervisor runs in on HA OS.
pub const SUPERVISOR_CONTAINER: &str = "hassio_supervisor";

/// The slug of the add-on running in `container`: `addon_<slug>` (before
/// 2026) or `app_<slug>` (the Supervisor's name since add-ons became apps).
/// The Supervisor's build containers (`addon_builder_<slug>`,
/// `app_builder_<slug>`) are not add-ons.
pub fn addon_slug(container: &str) -> Option<&str> {
    let slug = container
        .strip_prefix("addon_")
        .or_else(|| container.strip_prefix("app_"))?;
    (is_slug(slug) && !slug.starts_with("builder_")).then_some(slug)
}

/// Whom a rule names, besides uid and gid.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    /// The container with exactly this name (`container = ...`, and the
    /// roles `homeassistant` and `supervisor`).
    Container(String),
    /// Any add-on (`role = "addon"`), or the add-on with this slug
    /// (`addon = "..."`).
    Addon(Option<String>),
}

/// One rule: who, what, where.
#[derive(Clone, Debug)]
struct Rule {
    uid: Option<u32>,
    gid: Option<u32>,
    subject: Option<Subject>,
    patterns: Vec<Pattern>,
    ops: Vec<Op>,
}

impl Rule {
    /// Does this rule name `who`? If so, with which add-on slug for
    /// `{slug}` (the caller's, when it is an add-on).
    fn names<'a>(&self, who: &Who<'a>) -> Option<Option<&'a str>> {
        if self.uid.is_some_and(|u| u != who.uid) || self.gid.is_some_and(|g| g != who.gid) {
            return None;
        }
        let slug = who.container.and_then(addon_slug);
        match &self.subject {
            None => Some(slug),
            Some(Subject::Container(name)) => {
                (who.container == Some(name.as_str())).then_some(slug)
            }
            Some(Subject::Addon(want)) => match (slug, want) {
                (Some(s), Some(w)) if s == w => Some(Some(s)),
                (Some(s), None) => Some(Some(s)),
                _ => None,
            },
        }
    }
}

/// A caller as the kernel identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A caller as the policy sees it: the kernel's uid and gid, and the name of
/// the container it runs in, if it runs in one teed could name (from the
/// identity layer: the caller's cgroup, then the container runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who<'a> {
    pub uid: u32,
    pub gid: u32,
    pub container: Option<&'a str>,
}

impl From<Caller> for Who<'static> {
    /// A process outside containers.
    fn from(c: Caller) -> Self {
        Who {
            uid: c.uid,
            gid: c.gid,
            container: None,
        }
    }
}

/// Only the owner may change the policy file and its directory, and the
/// owner must be root (or the user teed itself runs as, for a daemon run by
/// hand): whoever can write either can grant themselves anything.
fn check_owned_and_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}: the policy and its directory must belong to root; chown root it",
            path.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}); chmod go-w it",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// A loaded, validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// The per-caller limits.
    pub limits: Limits,
    addons: usize,
    warnings: Vec<String>,
}

fn ms(v: Option<u64>, default: Duration, name: &str, lo: u64, hi: u64) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(Duration::from_millis(x)),
        Some(x) => Err(format!(
            "limits.{name} = {x} is out of range ({lo} to {hi})"
        )),
    }
}

fn num(v: Option<u32>, default: u32, name: &str, lo: u32, hi: u32) -> Result<u32, String> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(x),
        Some(x) => Err(format!(
            "limits.{name} = {x} is out of range ({lo} to {hi})"
        )),
    }
}

impl LimitsFile {
    fn resolve(&self) -> Result<Limits, String> {
        let d = Limits::default();
        let cap = MAX_CONNECTIONS_CAP as u32;
        let max_connections = num(
            self.max_connections,
            d.max_connections as u32,
            "max_connections",
            1,
            cap,
        )?;
        if self.max_connections_per_uid.is_some() && self.max_connections_per_caller.is_some() {
            return Err(
                "limits.max_connections_per_uid is the old name of limits.max_connections_per_caller: give one of them"
                    .into(),
            );
        }
        let (per_caller, per_caller_name) = match self.max_connections_per_uid {
            Some(v) => (Some(v), "max_connections_per_uid"),
            None => (
                self.max_connections_per_caller,
                "max_connections_per_caller",
            ),
        };
        let l = Limits {
            requests_per_second: f64::from(num(
                self.requests_per_second,
                d.requests_per_second as u32,
                "requests_per_second",
                1,
                1_000_000,
            )?),
            burst: num(self.burst, d.burst, "burst", 1, 1_000_000)?,
            max_connections: max_connections as usize,
            max_connections_per_caller: num(
                per_caller,
                (d.max_connections_per_caller as u32).min(max_connections),
                per_caller_name,
                1,
                max_connections,
            )? as usize,
            max_unnamed_connections: num(
                self.max_unnamed_connections,
                (d.max_unnamed_connections as u32).min(max_connections - 1),
                "max_unnamed_connections",
                0,
                max_connections - 1,
            )? as usize,
            idle_timeout: ms(
                self.idle_timeout_ms,
                d.idle_timeout,
                "idle_timeout_ms",
                100,
                3_600_000,
            )?,
            request_timeout: ms(
                self.request_timeout_ms,
                d.request_timeout,
                "request_timeout_ms",
                100,
                600_000,
            )?,
            failed_unseals_free: num(
                self.failed_unseals_free,
                d.failed_unseals_free,
                "failed_unseals_free",
                0,
                1000,
            )?,
            failed_unseal_backoff: ms(
                self.failed_unseal_backoff_ms,
                d.failed_unseal_backoff,
                "failed_unseal_backoff_ms",
                1,
                3_600_000,
            )?,
            failed_unseals_lockout: num(
                self.failed_unseals_lockout,
                d.failed_unseals_lockout,
                "failed_unseals_lockout",
                1,
                100_000,
            )?,
            lockout: Duration::from_secs(
                num(
                    self.lockout_seconds
                        .map(|s| s.min(u64::from(u32::MAX)) as u32),
                    d.lockout.as_secs() as u32,
                    "lockout_seconds",
                    1,
                    86_400,
                )?
                .into(),
            ),
            failure_window: Duration::from_secs(
                num(
                    self.failure_window_seconds
                        .map(|s| s.min(u64::from(u32::MAX)) as u32),
                    d.failure_window.as_secs() as u32,
                    "failure_window_seconds",
                    1,
                    86_400 * 7,
                )?
                .into(),
            ),
        };
        if l.failed_unseals_lockout <= l.failed_unseals_free {
            return Err(format!(
                "limits.failed_unseals_lockout ({}) must be above limits.failed_unseals_free ({})",
                l.failed_unseals_lockout, l.failed_unseals_free
            ));
        }
        Ok(l)
    }
}

/// Operations an `[addons]` entry grants on its own namespaces.
const ADDON_OPS: [Op; 4] = [Op::Unseal, Op::Seal, Op::Pubkey, Op::Status];

fn is_slug(s: &str) -> bool {
    !s.contains('/') && namespace::is_valid(s) && s.len() <= 64 - "addon/".len() - 2
}

impl Policy {
    /// Parse and validate a policy file's text. The error is one line (or a
    /// TOML diagnostic) saying what is wrong and where.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            // The TOML error names the line and column; keep it compact.
            e.to_string().trim_end().replace('\n', " | ")
        })?;
        if file.version != POLICY_VERSION {
            return Err(format!(
                "version = {} is not supported: this teed reads policy version {POLICY_VERSION}",
                file.version
            ));
        }
        let limits = file.limits.resolve()?;
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for (i, r) in file.rules.iter().enumerate() {
            let at = format!("rule {} ([[rule]] number {} in the file)", i + 1, i + 1);
            let named = [&r.container, &r.role, &r.addon]
                .iter()
                .filter(|f| f.is_some())
                .count();
            if r.uid.is_none() && r.gid.is_none() && named == 0 {
                return Err(format!(
                    "{at}: needs `uid`, `gid`, `container`, `role` or `addon` \
                     (a rule for everyone is not allowed)"
                ));
            }
            if named > 1 {
                return Err(format!(
                    "{at}: give at most one of `container`, `role` and `addon`"
                ));
            }
            let subject = if let Some(c) = &r.container {
                if !is_container_name(c) {
                    return Err(format!(
                        "{at}: container = \"{c}\" is not a Docker container name \
                         (a-z A-Z 0-9 _ . -, starting with a letter or digit, at most {MAX_NAME} chars)"
                    ));
                }
                Some(Subject::Container(c.clone()))
            } else if let Some(role) = &r.role {
                Some(match role.as_str() {
                    "homeassistant" => Subject::Container(CORE_CONTAINER.into()),
                    "supervisor" => Subject::Container(SUPERVISOR_CONTAINER.into()),
                    "addon" => Subject::Addon(None),
                    other => {
                        return Err(format!(
                            "{at}: unknown role `{other}` (roles: {})",
                            ROLES.join(", ")
                        ))
                    }
                })
            } else if let Some(slug) = &r.addon {
                if !is_slug(slug) || slug.starts_with("builder_") {
                    return Err(format!(
                        "{at}: addon = \"{slug}\" is not an add-on slug (a-z 0-9 . _ -, starting \
                         with a letter or digit, at most 56 chars)"
                    ));
                }
                Some(Subject::Addon(Some(slug.clone())))
            } else {
                None
            };
            let slug_allowed = matches!(subject, Some(Subject::Addon(_)));
            if r.operations.is_empty() {
                return Err(format!("{at}: `operations` is empty"));
            }
            let mut ops = Vec::new();
            for o in &r.operations {
                let op = Op::from_name(o).ok_or_else(|| {
                    format!("{at}: unknown operation `{o}` (the daemon offers unseal, seal, pubkey, status)")
                })?;
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
            let patterns = r
                .namespaces
                .iter()
                .map(|p| Pattern::parse(p, slug_allowed).map_err(|e| format!("{at}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if patterns.is_empty() && ops.iter().any(|o| matches!(o, Op::Seal | Op::Unseal)) {
                return Err(format!(
                    "{at}: grants seal or unseal but lists no `namespaces`"
                ));
            }
            if subject.is_none() && (r.uid == Some(0) || r.gid == Some(0)) {
                warnings.push(format!(
                    "{at} names {} 0 without a container: on Home Assistant OS every container \
                     (Home Assistant, the Supervisor, every add-on) runs as uid 0 and gid 0, so \
                     this rule grants all of them",
                    if r.uid == Some(0) { "uid" } else { "gid" }
                ));
            }
            rules.push(Rule {
                uid: r.uid,
                gid: r.gid,
                subject,
                patterns,
                ops,
            });
        }
        let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
        for (slug, uid) in &file.addons {
            if !is_slug(slug) {
                return Err(format!(
                    "addons.{slug}: not an add-on slug (a-z 0-9 . _ -, starting with a letter or digit, at most 56 chars)"
                ));
            }
            if let Some(other) = seen.insert(*uid, slug) {
                return Err(format!(
                    "addons.{slug} and addons.{other} both have uid {uid}: each add-on needs its own uid"
                ));
            }
            if *uid == 0 {
                warnings.push(format!(
                    "addons.{slug} = 0: on Home Assistant OS every container runs as uid 0, \
                     so this grants addon/{slug} to all of them; name add-ons by container \
                     (`role = \"addon\"`) instead"
                ));
            }
            rules.push(Rule {
                uid: Some(*uid),
                gid: None,
                subject: None,
                patterns: vec![
                    Pattern::Exact(format!("addon/{slug}")),
                    Pattern::Under(format!("addon/{slug}")),
                ],
                ops: ADDON_OPS.to_vec(),
            });
        }
        Ok(Policy {
            rules,
            limits,
            addons: file.addons.len(),
            warnings,
        })
    }

    /// Read and parse a policy file (at most 1 MiB). A file other users may
    /// write is refused: whoever can write it can grant themselves anything.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let meta = f
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        check_owned_and_private(path, &meta)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir_meta =
            std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        check_owned_and_private(dir, &dir_meta)?;
        let mut bytes = Vec::new();
        f.take(MAX_POLICY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if bytes.len() as u64 > MAX_POLICY_FILE {
            return Err(format!("{} is larger than 1 MiB", path.display()));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// May `who` (a [`Caller`] outside containers, or a [`Who`]) do `op`
    /// (on `ns`, for seal and unseal)? Never for a `boot/` namespace.
    ///
    /// A rule matches when every one of its `uid`, `gid` and container
    /// conditions holds: `uid` and `gid` compare the kernel's ids, in a
    /// container or not (so files written for uid-mapped callers keep their
    /// meaning); `container`, `role` and `addon` need the caller's container
    /// to have been named.
    pub fn allows<'a>(&self, who: impl Into<Who<'a>>, op: Op, ns: Option<&str>) -> bool {
        let who = who.into();
        if ns.is_some_and(namespace::is_boot) {
            return false;
        }
        self.rules.iter().any(|r| {
            r.ops.contains(&op)
                && r.names(&who).is_some_and(|slug| match ns {
                    None => true,
                    Some(n) => r.patterns.iter().any(|p| p.matches(n, slug)),
                })
        })
    }

    /// Does any rule name `who`, whatever it grants? Callers no rule names
    /// share a small number of connection slots (`max_unnamed_connections`).
    pub fn names<'a>(&self, who: impl Into<Who<'a>>) -> bool {
        let who = who.into();
        self.rules.iter().any(|r| r.names(&who).is_some())
    }

    /// What in this file is valid but probably not meant (one line each).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Rules in force (explicit rules plus one per add-on).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Add-ons listed in `[addons]`.
    pub fn addon_count(&self) -> usize {
        self.addons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_others_could_change_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("policy.toml");
        std::fs::write(&file, "version = 1\n").unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&dir, 0o755);
        mode(&file, 0o644);
        assert!(Policy::load(&file).is_ok());
        mode(&file, 0o664);
        let e = Policy::load(&file).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");
        mode(&file, 0o646);
        assert!(Policy::load(&file).is_err());
        mode(&file, 0o600);
        mode(&dir, 0o775);
        let e = Policy::load(&file).unwrap_err();
        assert!(e.contains("etc") && e.contains("group or others"), "{e}");
        mode(&dir, 0o1777);
        assert!(
            Policy::load(&file).is_err(),
            "a sticky world-writable directory too"
        );
        mode(&dir, 0o700);
        assert!(Policy::load(&file).is_ok());
    }

    const HA: Caller = Caller {
        uid: 8123,
        gid: 8123,
    };

    fn policy(text: &str) -> Policy {
        Policy::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn default_deny_and_rule_matching() {
        let p = policy(
            r#"
            version = 1
            [[rule]]
            uid = 8123
            namespaces = ["ha/*", "shared"]
            operations = ["unseal", "seal", "status"]
            [[rule]]
            gid = 900
            namespaces = ["addon/*"]
            operations = ["seal"]
            [[rule]]
            uid = 5
            gid = 5
            operations = ["pubkey"]
            [addons]
            core_mosquitto = 20001
            "#,
        );
        assert!(p.allows(HA, Op::Unseal, Some("ha/core")));
        assert!(p.allows(HA, Op::Unseal, Some("ha/core/x")));
        assert!(!p.allows(HA, Op::Unseal, Some("ha")));
        assert!(!p.allows(HA, Op::Unseal, Some("hab/x")));
        assert!(p.allows(HA, Op::Seal, Some("shared")));
        assert!(!p.allows(HA, Op::Seal, Some("shared/x")));
        assert!(p.allows(HA, Op::Status, None));
        assert!(!p.allows(HA, Op::Pubkey, None));
        let other = Caller {
            uid: 1000,
            gid: 1000,
        };
        for op in Op::ALL {
            assert!(!p.allows(other, op, Some("ha/core")));
            assert!(!p.allows(other, op, None));
        }
        let sup = Caller { uid: 1, gid: 900 };
        assert!(p.allows(sup, Op::Seal, Some("addon/core_mosquitto")));
        assert!(!p.allows(sup, Op::Unseal, Some("addon/core_mosquitto")));
        assert!(p.allows(Caller { uid: 5, gid: 5 }, Op::Pubkey, None));
        assert!(!p.allows(Caller { uid: 5, gid: 6 }, Op::Pubkey, None));
        let mosq = Caller {
            uid: 20001,
            gid: 20001,
        };
        assert!(p.allows(mosq, Op::Unseal, Some("addon/core_mosquitto")));
        assert!(p.allows(mosq, Op::Seal, Some("addon/core_mosquitto/db")));
        assert!(!p.allows(mosq, Op::Unseal, Some("addon/core_mosquitto2")));
        assert!(!p.allows(mosq, Op::Unseal, Some("addon/other")));
        assert!(!p.allows(mosq, Op::Unseal, Some("ha/core")));
        assert_eq!(p.rule_count(), 4);
        assert_eq!(p.addon_count(), 1);
    }

    #[test]
    fn boot_is_refused_at_load_and_at_run_time() {
        for pat in ["boot/*", "boot/luks-data", "boot"] {
            let e = Policy::parse(&format!(
                "version = 1\n[[rule]]\nuid = 0\nnamespaces = [\"{pat}\"]\noperations = [\"unseal\"]\n"
            ))
            .unwrap_err();
            assert!(e.contains("boot"), "{e}");
        }
        let p = policy(
            "version = 1\n[[rule]]\nuid = 0\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\"]\n",
        );
        assert!(!p.allows(
            Caller { uid: 0, gid: 0 },
            Op::Unseal,
            Some("boot/luks-data")
        ));
    }

    #[test]
    fn broken_files_are_refused_with_a_reason() {
        for (text, want) in [
            ("", "version"),
            ("version = 2", "version"),
            ("version = 1\nextra = 1", "extra"),
            ("version = 1\n[[rule]]\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\"]", "uid"),
            ("version = 1\n[[rule]]\nuid = 1\nnamespaces = [\"ha/*\"]\noperations = [\"rotate\"]", "rotate"),
            ("version = 1\n[[rule]]\nuid = 1\nnamespaces = [\"Ha/*\"]\noperations = [\"unseal\"]", "Ha/*"),
            ("version = 1\n[[rule]]\nuid = 1\nnamespaces = [\"*\"]\noperations = [\"unseal\"]", "*"),
            ("version = 1\n[[rule]]\nuid = 1\noperations = [\"unseal\"]", "namespaces"),
            ("version = 1\n[[rule]]\nuid = -1\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\"]", "uid"),
            ("version = 1\n[[rule]]\nuid = 1\nnamespaces = [\"ha/*\"]\noperations = []", "empty"),
            ("version = 1\n[[rule]]\nuid = 1\nnamespace = [\"ha/*\"]\noperations = [\"seal\"]", "namespace"),
            ("version = 1\n[addons]\n\"Bad/Slug\" = 5", "slug"),
            ("version = 1\n[addons]\na = 5\nb = 5", "uid 5"),
            ("version = 1\n[limits]\nburst = 0", "burst"),
            ("version = 1\n[limits]\nfailed_unseals_free = 9\nfailed_unseals_lockout = 9", "lockout"),
            ("version = 1\n[limits]\nmax_connections = 2\nmax_connections_per_uid = 3", "per_uid"),
            ("version = 1\n[limits]\nrequest_timeout_ms = 5", "request_timeout_ms"),
            ("version = 1\n[[rule]\n", "line"),
        ] {
            let e = Policy::parse(text).map(|_| ()).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn limits_have_defaults_and_overrides() {
        let p = policy("version = 1\n[limits]\nburst = 7\nlockout_seconds = 2\n");
        assert_eq!(p.limits.burst, 7);
        assert_eq!(p.limits.lockout, Duration::from_secs(2));
        assert_eq!(p.limits.max_connections, Limits::default().max_connections);
    }

    fn in_container(name: &str) -> Who<'_> {
        Who {
            uid: 0,
            gid: 0,
            container: Some(name),
        }
    }

    const ROOT: Caller = Caller { uid: 0, gid: 0 };

    #[test]
    fn rules_by_container_role_and_addon_slug() {
        let p = policy(
            r#"
            version = 1
            [[rule]]
            container = "mqtt_bridge"
            namespaces = ["shared/mqtt"]
            operations = ["unseal"]
            [[rule]]
            role = "homeassistant"
            namespaces = ["ha/*"]
            operations = ["unseal", "seal"]
            [[rule]]
            role = "addon"
            namespaces = ["addon/{slug}", "addon/{slug}/*"]
            operations = ["unseal", "seal", "status"]
            [[rule]]
            addon = "core_mosquitto"
            namespaces = ["shared/mqtt/*"]
            operations = ["seal"]
            [[rule]]
            uid = 0
            container = "hassio_supervisor"
            namespaces = ["supervisor/*"]
            operations = ["unseal"]
            "#,
        );
        let bridge = in_container("mqtt_bridge");
        assert!(p.allows(bridge, Op::Unseal, Some("shared/mqtt")));
        assert!(!p.allows(bridge, Op::Seal, Some("shared/mqtt")));
        assert!(!p.allows(
            in_container("mqtt_bridge2"),
            Op::Unseal,
            Some("shared/mqtt")
        ));
        let ha = in_container("homeassistant");
        assert!(p.allows(ha, Op::Unseal, Some("ha/core")));
        assert!(!p.allows(ha, Op::Unseal, Some("addon/homeassistant")));
        // Add-ons, under either container name, get their own slug only.
        for name in ["addon_core_mosquitto", "app_core_mosquitto"] {
            let m = in_container(name);
            assert!(
                p.allows(m, Op::Unseal, Some("addon/core_mosquitto")),
                "{name}"
            );
            assert!(p.allows(m, Op::Seal, Some("addon/core_mosquitto/tls")));
            assert!(p.allows(m, Op::Status, None));
            assert!(p.allows(m, Op::Seal, Some("shared/mqtt/x")));
            assert!(!p.allows(m, Op::Unseal, Some("addon/core_mosquitto2")));
            assert!(!p.allows(m, Op::Unseal, Some("addon/other")));
            assert!(!p.allows(m, Op::Unseal, Some("ha/core")));
            assert!(!p.allows(m, Op::Pubkey, None));
        }
        let other = in_container("app_other");
        assert!(p.allows(other, Op::Unseal, Some("addon/other")));
        assert!(!p.allows(other, Op::Seal, Some("shared/mqtt/x")));
        // Not add-ons: other containers, build containers, bad slugs, and
        // the host's root.
        for name in [
            "addon_",
            "app_",
            "addon_Bad",
            "app_builder_other",
            "addon_builder_x",
            "my_addon_x",
            "happ_x",
        ] {
            let c = in_container(name);
            assert!(!p.names(c), "{name}");
            for op in Op::ALL {
                assert!(!p.allows(c, op, Some("addon/other")), "{name}");
                assert!(!p.allows(c, op, None), "{name}");
            }
        }
        assert!(!p.names(ROOT));
        assert!(!p.allows(ROOT, Op::Unseal, Some("ha/core")));
        // uid and container together: both must hold.
        let sup = in_container("hassio_supervisor");
        assert!(p.allows(sup, Op::Unseal, Some("supervisor/x")));
        let sup_1000 = Who { uid: 1000, ..sup };
        assert!(!p.allows(sup_1000, Op::Unseal, Some("supervisor/x")));
        assert!(p.names(sup) && !p.names(sup_1000));
        assert!(p.names(ha) && p.names(bridge) && p.names(other));
    }

    #[test]
    fn uid_rules_keep_their_meaning_in_and_out_of_containers() {
        // A file written before containers were recognised: uid 8123 is
        // Home Assistant's, wherever it runs; [addons] by uid likewise.
        let p = policy(
            "version = 1\n[[rule]]\nuid = 8123\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\"]\n\
             [addons]\ncore_mosquitto = 20001\n",
        );
        let ha_in_docker = Who {
            uid: 8123,
            gid: 8123,
            container: Some("homeassistant"),
        };
        assert!(p.allows(ha_in_docker, Op::Unseal, Some("ha/core")));
        assert!(p.allows(HA, Op::Unseal, Some("ha/core")));
        let mosq = Who {
            uid: 20001,
            gid: 20001,
            container: Some("addon_other"),
        };
        assert!(p.allows(mosq, Op::Unseal, Some("addon/core_mosquitto")));
        assert!(!p.allows(mosq, Op::Unseal, Some("addon/other")));
        // The container name alone grants nothing here.
        assert!(!p.allows(in_container("homeassistant"), Op::Unseal, Some("ha/core")));
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn bad_container_rules_are_refused_with_a_reason() {
        for (text, want) in [
            ("[[rule]]\ncontainer = \"a/b\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "container name"),
            ("[[rule]]\ncontainer = \"\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "container name"),
            ("[[rule]]\nrole = \"admin\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "unknown role `admin`"),
            ("[[rule]]\naddon = \"Bad\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "slug"),
            ("[[rule]]\naddon = \"builder_x\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "slug"),
            ("[[rule]]\nrole = \"addon\"\naddon = \"x\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "at most one"),
            ("[[rule]]\ncontainer = \"x\"\nrole = \"addon\"\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "at most one"),
            ("[[rule]]\ncontainer = \"x\"\nnamespaces = [\"addon/{slug}\"]\noperations = [\"unseal\"]", "{slug}"),
            ("[[rule]]\nuid = 5\nnamespaces = [\"addon/{slug}\"]\noperations = [\"unseal\"]", "{slug}"),
            ("[[rule]]\nrole = \"addon\"\nnamespaces = [\"addon/x{slug}\"]\noperations = [\"unseal\"]", "whole segment"),
            ("[[rule]]\nrole = \"addon\"\nnamespaces = [\"boot/{slug}\"]\noperations = [\"unseal\"]", "boot"),
            ("[[rule]]\nrole = \"addon\"\nnamespaces = [\"Addon/{slug}\"]\noperations = [\"unseal\"]", "Addon"),
            ("[[rule]]\nrole = \"addon\"\noperations = [\"unseal\"]", "namespaces"),
            ("[[rule]]\nnamespaces = [\"x\"]\noperations = [\"unseal\"]", "container"),
            ("[limits]\nmax_unnamed_connections = 64", "max_unnamed_connections"),
            ("[limits]\nmax_connections_per_uid = 2\nmax_connections_per_caller = 2", "old name"),
            ("[limits]\nmax_connections = 4\nmax_connections_per_caller = 5", "per_caller"),
        ] {
            let text = format!("version = 1\n{text}\n");
            let e = Policy::parse(&text).map(|_| ()).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn uid_0_rules_are_valid_but_warned_about() {
        let p = policy(
            "version = 1\n[[rule]]\nuid = 0\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\"]\n\
             [[rule]]\nuid = 0\ncontainer = \"homeassistant\"\nnamespaces = [\"ha/*\"]\noperations = [\"seal\"]\n\
             [addons]\nx = 0\n",
        );
        assert_eq!(p.warnings().len(), 2, "{:?}", p.warnings());
        assert!(p.warnings()[0].contains("rule 1") && p.warnings()[0].contains("every container"));
        assert!(p.warnings()[1].contains("addons.x"));
    }

    #[test]
    fn connection_limits_per_caller_and_for_the_unnamed() {
        let d = policy("version = 1\n").limits;
        assert_eq!(
            (
                d.max_connections,
                d.max_connections_per_caller,
                d.max_unnamed_connections
            ),
            (64, 16, 4)
        );
        let l = policy(
            "version = 1\n[limits]\nmax_connections_per_uid = 3\nmax_unnamed_connections = 0\n",
        )
        .limits;
        assert_eq!(
            (l.max_connections_per_caller, l.max_unnamed_connections),
            (3, 0)
        );
        let l = policy("version = 1\n[limits]\nmax_connections_per_caller = 5\n").limits;
        assert_eq!(l.max_connections_per_caller, 5);
        // With one slot in all, none is left for unnamed callers.
        let l = policy("version = 1\n[limits]\nmax_connections = 1\n").limits;
        assert_eq!(
            (l.max_connections_per_caller, l.max_unnamed_connections),
            (1, 0)
        );
    }

    #[test]
    fn the_shipped_default_policy_fits_stock_ha_os() {
        let p = policy(include_str!("../../../systemd/teed-policy.toml"));
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
        let ha = in_container("homeassistant");
        for op in [Op::Unseal, Op::Seal] {
            assert!(p.allows(ha, op, Some("ha/core")));
            assert!(p.allows(ha, op, Some("ha/core/x")));
            assert!(!p.allows(ha, op, Some("addon/core_mosquitto")));
            assert!(!p.allows(ha, op, Some("supervisor/x")));
        }
        assert!(p.allows(ha, Op::Pubkey, None) && p.allows(ha, Op::Status, None));
        for name in ["addon_core_mosquitto", "app_core_mosquitto"] {
            let a = in_container(name);
            for op in [Op::Unseal, Op::Seal] {
                assert!(p.allows(a, op, Some("addon/core_mosquitto")));
                assert!(p.allows(a, op, Some("addon/core_mosquitto/db")));
                assert!(!p.allows(a, op, Some("addon/other")));
                assert!(!p.allows(a, op, Some("ha/core")));
            }
            assert!(p.allows(a, Op::Pubkey, None) && p.allows(a, Op::Status, None));
        }
        let sup = in_container("hassio_supervisor");
        assert!(p.allows(sup, Op::Unseal, Some("supervisor/x")));
        assert!(p.allows(sup, Op::Seal, Some("addon/core_mosquitto")));
        assert!(!p.allows(sup, Op::Unseal, Some("addon/core_mosquitto")));
        assert!(!p.allows(sup, Op::Unseal, Some("ha/core")));
        // Nothing for other containers, root, or anyone else outside.
        for who in [
            in_container("quirky_turing"),
            in_container("hassio_dns"),
            Who::from(ROOT),
            Who::from(Caller {
                uid: 8123,
                gid: 8123,
            }),
        ] {
            assert!(!p.names(who), "{who:?}");
            for op in Op::ALL {
                assert!(!p.allows(who, op, None) && !p.allows(who, op, Some("ha/core")));
            }
        }
        for who in [ha, sup, in_container("addon_boot"), Who::from(ROOT)] {
            assert!(!p.allows(who, Op::Unseal, Some("boot/luks-data")));
        }
        assert_eq!(p.limits, Limits::default());
    }

    #[test]
    fn the_previous_shipped_policy_keeps_its_meaning() {
        // The uid-based file shipped before containers were recognised.
        let text = include_str!("../fixtures/policy-by-uid.toml");
        let p = policy(text);
        let ha = Caller {
            uid: 8123,
            gid: 8123,
        };
        assert!(p.allows(ha, Op::Unseal, Some("ha/core")));
        assert!(!p.allows(ha, Op::Unseal, Some("addon/core_mosquitto")));
        assert!(!p.allows(Caller { uid: 0, gid: 0 }, Op::Unseal, Some("ha/core")));
        for c in [
            ha,
            Caller { uid: 0, gid: 0 },
            Caller {
                uid: 8124,
                gid: 8124,
            },
        ] {
            assert!(!p.allows(c, Op::Unseal, Some("boot/luks-data")));
        }
        let sup = Caller {
            uid: 8124,
            gid: 8124,
        };
        assert!(p.allows(sup, Op::Seal, Some("addon/x")));
        assert!(!p.allows(sup, Op::Unseal, Some("addon/x")));
        // Its uids mean the same in a container (HA run with --user 8123).
        let in_docker = Who {
            container: Some("homeassistant"),
            ..Who::from(ha)
        };
        assert!(p.allows(in_docker, Op::Unseal, Some("ha/core")));
        // And a container's name grants nothing under it.
        assert!(!p.allows(in_container("homeassistant"), Op::Unseal, Some("ha/core")));
        assert_eq!(p.limits, Limits::default());
    }
}
