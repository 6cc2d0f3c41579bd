//! The policy file: which callers (by kernel uid and gid) may use which
//! operations on which namespaces, and the per-caller limits. Format and
//! shipped default in `docs/daemon.md`; an example is
//! `systemd/teed-policy.toml`.
//!
//! Default deny: a caller no rule matches may do nothing. Namespaces under
//! `boot/` are never served at run time: a policy naming one is refused at
//! load, and the daemon refuses them whatever the policy says.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hakeys_engine::namespace;
use serde::Deserialize;

use teed_protocol::Op;

/// The policy file format version this daemon reads.
pub const POLICY_VERSION: u32 = 1;
/// The largest policy file read.
pub const MAX_POLICY_FILE: u64 = 1024 * 1024;

/// Per-caller (per uid) limits. Every field has a default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Token bucket: sustained requests per second per uid ...
    pub requests_per_second: f64,
    /// ... and the burst above it.
    pub burst: u32,
    /// Connections open at once, all callers together.
    pub max_connections: usize,
    /// Connections open at once per uid.
    pub max_connections_per_uid: usize,
    /// How long a connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long a request may take to arrive once its first byte has, and
    /// how long a response may take to be taken.
    pub request_timeout: Duration,
    /// Failed unseals forgiven before backing off.
    pub failed_unseals_free: u32,
    /// The first back-off; doubles with each further failure.
    pub failed_unseal_backoff: Duration,
    /// Failed unseals (counted in one failure window) that lock the uid out.
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
            max_connections_per_uid: 16,
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
    max_connections_per_uid: Option<u32>,
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

/// A namespace pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// Exactly this namespace.
    Exact(String),
    /// Any namespace strictly below this one (`addon/x/*`).
    Under(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let (base, p) = match text.strip_suffix("/*") {
            Some(base) => (base, Pattern::Under(base.to_string())),
            None => (text, Pattern::Exact(text.to_string())),
        };
        if !namespace::is_valid(base) {
            return Err(format!(
                "namespace pattern `{text}` is not a namespace or `namespace/*` \
                 (1-64 chars of a-z 0-9 . _ -, segments separated by /)"
            ));
        }
        if base == "boot" || namespace::is_boot(base) {
            return Err(format!(
                "namespace pattern `{text}` is under boot/: boot secrets are never served \
                 at run time, whatever the policy says; remove it"
            ));
        }
        Ok(p)
    }

    fn matches(&self, ns: &str) -> bool {
        match self {
            Pattern::Exact(e) => ns == e,
            Pattern::Under(base) => ns
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
        }
    }
}

/// One rule: who, what, where.
#[derive(Clone, Debug)]
struct Rule {
    uid: Option<u32>,
    gid: Option<u32>,
    patterns: Vec<Pattern>,
    ops: Vec<Op>,
}

/// A caller as the kernel identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A loaded, validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// The per-caller limits.
    pub limits: Limits,
    addons: usize,
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
            max_connections_per_uid: num(
                self.max_connections_per_uid,
                (d.max_connections_per_uid as u32).min(max_connections),
                "max_connections_per_uid",
                1,
                max_connections,
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
        for (i, r) in file.rules.iter().enumerate() {
            let at = format!("rule {} ([[rule]] number {} in the file)", i + 1, i + 1);
            if r.uid.is_none() && r.gid.is_none() {
                return Err(format!(
                    "{at}: needs `uid`, `gid` or both (a rule for everyone is not allowed)"
                ));
            }
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
                .map(|p| Pattern::parse(p).map_err(|e| format!("{at}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if patterns.is_empty() && ops.iter().any(|o| matches!(o, Op::Seal | Op::Unseal)) {
                return Err(format!(
                    "{at}: grants seal or unseal but lists no `namespaces`"
                ));
            }
            rules.push(Rule {
                uid: r.uid,
                gid: r.gid,
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
            rules.push(Rule {
                uid: Some(*uid),
                gid: None,
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
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(format!(
                "{} is writable by every user (mode {:o}); chmod o-w it",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
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

    /// May `caller` do `op` (on `ns`, for seal and unseal)? Never for a
    /// `boot/` namespace.
    pub fn allows(&self, caller: Caller, op: Op, ns: Option<&str>) -> bool {
        if ns.is_some_and(namespace::is_boot) {
            return false;
        }
        self.rules.iter().any(|r| {
            r.uid.is_none_or(|u| u == caller.uid)
                && r.gid.is_none_or(|g| g == caller.gid)
                && r.ops.contains(&op)
                && match ns {
                    None => true,
                    Some(n) => r.patterns.iter().any(|p| p.matches(n)),
                }
        })
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

    #[test]
    fn the_shipped_default_policy_loads() {
        let text = include_str!("../../../systemd/teed-policy.toml");
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
    }
}
