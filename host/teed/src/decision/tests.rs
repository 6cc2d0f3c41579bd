//! The trust decision, rule by rule: no root, no users, no sockets. The
//! engine is a fake that records what reached it, so every test also checks
//! that a refused request never got as far as the engine.

use std::cell::RefCell;
use std::time::Duration;

use hakeys_client::armor;
use hakeys_proto::StatusResponse;
use serde_json::Value;

use super::*;

/// Answers every job; remembers which ones it saw.
#[derive(Default)]
struct FakeEngine {
    seen: RefCell<Vec<&'static str>>,
    /// When set, every call fails with this.
    fail: Option<Failure>,
}

impl Engine for FakeEngine {
    fn call(&self, job: Job) -> Result<Answer, Failure> {
        let name = match &job {
            Job::Unseal { .. } => "unseal",
            Job::Seal { .. } => "seal",
            Job::Pubkey => "pubkey",
            Job::Status => "status",
            Job::BootDone => "boot-done",
        };
        self.seen.borrow_mut().push(name);
        if let Some(f) = &self.fail {
            return Err(f.clone());
        }
        Ok(match job {
            Job::Unseal { namespace, .. } => Answer::Unseal {
                namespace,
                plaintext: Zeroizing::new(b"s3cret".to_vec()),
            },
            Job::Seal { .. } => Answer::Seal {
                blob: b"HKSB\x01\x01".to_vec(),
            },
            Job::Pubkey => Answer::Pubkey {
                sec1: p256_generator_sec1(),
            },
            Job::BootDone => Answer::BootDone,
            Job::Status => Answer::Status(StatusResponse {
                engine_version: 0x0001_0000,
                initialised: true,
                epoch: 3,
                min_epoch: 2,
                boot_locked: true,
            }),
        })
    }

    fn backend_name(&self) -> &'static str {
        "sim"
    }
}

/// The P-256 base point, uncompressed: a valid public key.
fn p256_generator_sec1() -> Vec<u8> {
    let mut v = vec![0x04];
    v.extend_from_slice(&hex_bytes(
        "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
    ));
    v.extend_from_slice(&hex_bytes(
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    ));
    v
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const POLICY: &str = r#"
version = 1

[[rule]]
uid = 8123
namespaces = ["ha/*"]
operations = ["unseal", "seal", "pubkey", "status"]

[[rule]]
gid = 500
namespaces = ["shared/x"]
operations = ["unseal"]

[addons]
mosquitto = 20001

[limits]
requests_per_second = 1
burst = 100
failed_unseals_free = 2
failed_unseal_backoff_ms = 1000
"#;

const CORE: Peer = Peer {
    uid: 8123,
    gid: 8123,
    pid: 10,
};
const ADDON: Peer = Peer {
    uid: 20001,
    gid: 20001,
    pid: 11,
};
const STRANGER: Peer = Peer {
    uid: 4242,
    gid: 4242,
    pid: 12,
};

/// A real blob for `ns`, sealed offline to a fixed test key (the fake
/// engine does not open it; the decoder parses its header).
fn blob_text(ns: &str) -> String {
    let key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let blob = hakeys_engine::blob::seal_to_device(
        &key.public_key(),
        ns,
        b"x",
        &mut hakeys_client::OsEntropy,
    )
    .unwrap();
    armor::blob_to_text(&blob)
}

fn unseal(ns: &str) -> String {
    format!(r#"{{"v":1,"op":"unseal","blob":"{}"}}"#, blob_text(ns))
}

fn seal(ns: &str) -> String {
    format!(r#"{{"v":1,"op":"seal","namespace":"{ns}","plaintext":"c2VjcmV0"}}"#)
}

struct World {
    engine: FakeEngine,
    policy: Policy,
    callers: Mutex<Callers>,
    now: Instant,
}

impl World {
    fn new() -> World {
        World {
            engine: FakeEngine::default(),
            policy: Policy::parse(POLICY).unwrap(),
            callers: Mutex::new(Callers::default()),
            now: Instant::now(),
        }
    }

    /// Decide `line` from `peer`; return the answer as JSON and the audit.
    fn ask(&self, peer: Peer, line: &str) -> (Value, Option<Audit>) {
        let d = decide(
            &self.engine,
            peer,
            line.as_bytes(),
            self.now,
            &self.policy,
            &self.callers,
        );
        let text = std::str::from_utf8(&d.answer).unwrap();
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        (serde_json::from_str(text).unwrap(), d.audit)
    }

    fn status_of(&self, peer: Peer, line: &str) -> String {
        self.ask(peer, line).0["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn engine_saw(&self) -> Vec<&'static str> {
        self.engine.seen.borrow().clone()
    }
}

#[test]
fn allowed_operations_reach_the_engine_and_are_audited() {
    let w = World::new();
    let (a, audit) = w.ask(CORE, &unseal("ha/core"));
    assert_eq!(a["status"], "ok");
    assert_eq!(a["namespace"], "ha/core");
    assert_eq!(a["plaintext"], "czNjcmV0");
    let audit = audit.unwrap();
    assert_eq!(
        audit.line(CORE),
        "audit uid=8123 gid=8123 pid=10 op=unseal ns=ha/core result=ok"
    );
    let (a, _) = w.ask(CORE, &seal("ha/new"));
    assert_eq!(a["status"], "ok");
    assert!(a["blob"].as_str().unwrap().starts_with("hakeys:v1:"));
    let (a, _) = w.ask(CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["backend"], "sim");
    assert_eq!(a["engine_version"], "1.0.0");
    assert_eq!(a["epoch"], 3);
    assert_eq!(a["boot_locked"], true);
    let (a, _) = w.ask(CORE, r#"{"v":1,"op":"pubkey"}"#);
    assert!(a["pem"].as_str().unwrap().contains("BEGIN PUBLIC KEY"));
    assert_eq!(w.engine_saw(), ["unseal", "seal", "status", "pubkey"]);
}

#[test]
fn addons_get_their_own_namespace_only() {
    let w = World::new();
    assert_eq!(w.status_of(ADDON, &unseal("addon/mosquitto")), "ok");
    assert_eq!(w.status_of(ADDON, &seal("addon/mosquitto/tls")), "ok");
    assert_eq!(w.status_of(ADDON, &unseal("addon/other")), "denied");
    assert_eq!(w.status_of(ADDON, &unseal("ha/core")), "denied");
    // status and pubkey name no namespace: an add-on gets them.
    assert_eq!(w.status_of(ADDON, r#"{"v":1,"op":"status"}"#), "ok");
    assert_eq!(w.engine_saw(), ["unseal", "seal", "status"]);
}

#[test]
fn rules_by_gid_match_any_uid_in_the_group() {
    let w = World::new();
    let member = Peer {
        uid: 777,
        gid: 500,
        pid: 1,
    };
    assert_eq!(w.status_of(member, &unseal("shared/x")), "ok");
    assert_eq!(w.status_of(member, &seal("shared/x")), "denied");
}

#[test]
fn strangers_are_denied_everything_and_the_engine_never_sees_it() {
    let w = World::new();
    for line in [
        unseal("ha/core"),
        seal("ha/core"),
        r#"{"v":1,"op":"status"}"#.to_string(),
        r#"{"v":1,"op":"pubkey"}"#.to_string(),
    ] {
        let (a, audit) = w.ask(STRANGER, &line);
        assert_eq!(a["status"], "denied", "{line}");
        assert!(a["message"].as_str().unwrap().contains("uid 4242"));
        assert_eq!(audit.unwrap().code, Code::Denied);
    }
    assert!(w.engine_saw().is_empty());
}

#[test]
fn boot_namespaces_are_refused_whatever_the_policy() {
    let mut w = World::new();
    w.policy = Policy::parse(
        "version = 1\n[[rule]]\nuid = 0\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\", \"seal\"]\n",
    )
    .unwrap();
    let root = Peer {
        uid: 0,
        gid: 0,
        pid: 1,
    };
    for line in [unseal("boot/luks-data"), seal("boot/x")] {
        let (a, audit) = w.ask(root, &line);
        assert_eq!(a["status"], "denied");
        assert!(a["message"].as_str().unwrap().contains("boot/"));
        assert!(audit.unwrap().ns.unwrap().starts_with("boot/"));
    }
    assert!(w.engine_saw().is_empty());
    // A policy naming boot/ is refused at load.
    assert!(Policy::parse(
        "version = 1\n[[rule]]\nuid = 0\nnamespaces = [\"boot/*\"]\noperations = [\"unseal\"]\n"
    )
    .is_err());
}

#[test]
fn an_unseal_for_another_namespace_than_asked_is_refused() {
    let w = World::new();
    let line = format!(
        r#"{{"v":1,"op":"unseal","blob":"{}","namespace":"ha/other"}}"#,
        blob_text("ha/core")
    );
    assert_eq!(w.status_of(CORE, &line), "namespace_mismatch");
    assert!(w.engine_saw().is_empty());
}

#[test]
fn malformed_and_root_only_lines_are_refused_with_an_audit_line() {
    let w = World::new();
    for (line, status) in [
        ("", "bad_message"),
        ("{", "bad_message"),
        (r#"{"v":1,"op":"status","x":1}"#, "bad_message"),
        (r#"{"v":2,"op":"status"}"#, "unsupported_version"),
        (r#"{"v":1,"op":"frob"}"#, "unknown_opcode"),
        (r#"{"v":1,"op":"rotate"}"#, "denied"),
        (
            r#"{"v":1,"op":"unseal","blob":"hakeys:v1:AAAA"}"#,
            "blob_rejected",
        ),
    ] {
        let (a, audit) = w.ask(CORE, line);
        assert_eq!(a["status"], status, "{line}");
        assert_eq!(audit.unwrap().code.name(), status);
    }
    assert!(w.engine_saw().is_empty());
}

#[test]
fn the_request_rate_is_limited_and_its_audit_lines_are_folded() {
    let mut w = World::new();
    w.policy.limits.burst = 3;
    for _ in 0..3 {
        assert_eq!(w.status_of(CORE, r#"{"v":1,"op":"status"}"#), "ok");
    }
    let (a, audit) = w.ask(CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["status"], "rate_limited");
    assert!(a["retry_after_ms"].as_u64().unwrap() >= 1);
    assert_eq!(audit.unwrap().code, Code::RateLimited);
    // The next ones in the same second are answered but not logged.
    let (a, audit) = w.ask(CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["status"], "rate_limited");
    assert!(audit.is_none());
    // Another caller is not affected.
    assert_eq!(w.status_of(ADDON, &unseal("addon/mosquitto")), "ok");
    assert_eq!(w.engine_saw().len(), 4);
}

#[test]
fn failed_unseals_back_off_the_caller() {
    let mut w = World::new();
    w.engine.fail = Some(Failure {
        code: Code::Engine(Status::BlobRejected),
        message: Status::BlobRejected.message().into(),
    });
    // failed_unseals_free = 2: two failures are free, the third starts the
    // back-off, and then unseals are refused before the engine.
    for _ in 0..3 {
        assert_eq!(w.status_of(CORE, &unseal("ha/core")), "blob_rejected");
    }
    let (a, _) = w.ask(CORE, &unseal("ha/core"));
    assert_eq!(a["status"], "rate_limited");
    assert_eq!(w.engine_saw().len(), 3);
    // Other operations still work.
    w.engine.fail = None;
    assert_eq!(w.status_of(CORE, &seal("ha/x")), "ok");
    // After the back-off, unseal is allowed again.
    w.now += Duration::from_secs(5);
    assert_eq!(w.status_of(CORE, &unseal("ha/core")), "ok");
}

#[test]
fn engine_failures_pass_through_with_retry_hints() {
    let mut w = World::new();
    w.engine.fail = Some(Failure {
        code: Code::Retry,
        message: "key engine restarting, retry".into(),
    });
    let (a, audit) = w.ask(CORE, &unseal("ha/core"));
    assert_eq!(a["status"], "retry");
    assert_eq!(a["retry_after_ms"], RETRY_AFTER_MS);
    assert_eq!(audit.unwrap().code, Code::Retry);
    w.engine.fail = Some(Failure {
        code: Code::Engine(Status::NotInitialised),
        message: Status::NotInitialised.message().into(),
    });
    let (a, _) = w.ask(CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["status"], "not_initialised");
    assert!(a.get("retry_after_ms").is_none());
}

#[test]
fn answers_and_audit_lines_never_carry_the_secret() {
    let w = World::new();
    let line = r#"{"v":1,"op":"seal","namespace":"ha/x","plaintext":"c2VjcmV0!"}"#;
    let (a, audit) = w.ask(CORE, line);
    assert_eq!(a["status"], "bad_message");
    assert!(!a.to_string().contains("c2VjcmV0"));
    assert!(!audit.unwrap().line(CORE).contains("c2VjcmV0"));
}

#[test]
fn connections_turned_away_get_a_code_and_a_reason() {
    assert_eq!(decision_name(Refusal::Busy), "busy");
    assert_eq!(decision_name(Refusal::TooManyConnections), "rate_limited");
    assert_eq!(
        decision_name(Refusal::RateLimited(Duration::from_secs(1))),
        "rate_limited"
    );
}

fn decision_name(r: Refusal) -> &'static str {
    refusal(r).0.name()
}
