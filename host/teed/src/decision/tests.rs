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
    origin: Origin::Host,
};
const ADDON: Peer = Peer {
    uid: 20001,
    gid: 20001,
    pid: 11,
    origin: Origin::Host,
};
const STRANGER: Peer = Peer {
    uid: 4242,
    gid: 4242,
    pid: 12,
    origin: Origin::Host,
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
    fn ask(&self, peer: &Peer, line: &str) -> (Value, Option<Audit>) {
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

    fn status_of(&self, peer: &Peer, line: &str) -> String {
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
    let (a, audit) = w.ask(&CORE, &unseal("ha/core"));
    assert_eq!(a["status"], "ok");
    assert_eq!(a["namespace"], "ha/core");
    assert_eq!(a["plaintext"], "czNjcmV0");
    // The test blobs are sealed offline to a test key: the answer says so,
    // so a caller that must not accept a planted value can refuse it.
    assert_eq!(a["kind"], "offline");
    let audit = audit.unwrap();
    assert_eq!(
        audit.line(&CORE),
        "audit uid=8123 gid=8123 pid=10 op=unseal ns=ha/core result=ok"
    );
    let (a, _) = w.ask(&CORE, &seal("ha/new"));
    assert_eq!(a["status"], "ok");
    assert!(a["blob"].as_str().unwrap().starts_with("hakeys:v1:"));
    let (a, _) = w.ask(&CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["backend"], "sim");
    assert_eq!(a["engine_version"], "1.0.0");
    assert_eq!(a["epoch"], 3);
    assert_eq!(a["boot_locked"], true);
    let (a, _) = w.ask(&CORE, r#"{"v":1,"op":"pubkey"}"#);
    assert!(a["pem"].as_str().unwrap().contains("BEGIN PUBLIC KEY"));
    assert_eq!(w.engine_saw(), ["unseal", "seal", "status", "pubkey"]);
}

#[test]
fn addons_get_their_own_namespace_only() {
    let w = World::new();
    assert_eq!(w.status_of(&ADDON, &unseal("addon/mosquitto")), "ok");
    assert_eq!(w.status_of(&ADDON, &seal("addon/mosquitto/tls")), "ok");
    assert_eq!(w.status_of(&ADDON, &unseal("addon/other")), "denied");
    assert_eq!(w.status_of(&ADDON, &unseal("ha/core")), "denied");
    // status and pubkey name no namespace: an add-on gets them.
    assert_eq!(w.status_of(&ADDON, r#"{"v":1,"op":"status"}"#), "ok");
    assert_eq!(w.engine_saw(), ["unseal", "seal", "status"]);
}

#[test]
fn rules_by_gid_match_any_uid_in_the_group() {
    let w = World::new();
    let member = Peer::host(777, 500, 1);
    assert_eq!(w.status_of(&member, &unseal("shared/x")), "ok");
    assert_eq!(w.status_of(&member, &seal("shared/x")), "denied");
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
        let (a, audit) = w.ask(&STRANGER, &line);
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
    let root = Peer::host(0, 0, 1);
    for line in [unseal("boot/luks-data"), seal("boot/x")] {
        let (a, audit) = w.ask(&root, &line);
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
    assert_eq!(w.status_of(&CORE, &line), "namespace_mismatch");
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
        let (a, audit) = w.ask(&CORE, line);
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
        assert_eq!(w.status_of(&CORE, r#"{"v":1,"op":"status"}"#), "ok");
    }
    let (a, audit) = w.ask(&CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["status"], "rate_limited");
    assert!(a["retry_after_ms"].as_u64().unwrap() >= 1);
    assert_eq!(audit.unwrap().code, Code::RateLimited);
    // The next ones in the same second are answered but not logged.
    let (a, audit) = w.ask(&CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["status"], "rate_limited");
    assert!(audit.is_none());
    // Another caller is not affected.
    assert_eq!(w.status_of(&ADDON, &unseal("addon/mosquitto")), "ok");
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
        assert_eq!(w.status_of(&CORE, &unseal("ha/core")), "blob_rejected");
    }
    let (a, _) = w.ask(&CORE, &unseal("ha/core"));
    assert_eq!(a["status"], "rate_limited");
    assert_eq!(w.engine_saw().len(), 3);
    // Other operations still work.
    w.engine.fail = None;
    assert_eq!(w.status_of(&CORE, &seal("ha/x")), "ok");
    // After the back-off, unseal is allowed again.
    w.now += Duration::from_secs(5);
    assert_eq!(w.status_of(&CORE, &unseal("ha/core")), "ok");
}

#[test]
fn engine_failures_pass_through_with_retry_hints() {
    let mut w = World::new();
    w.engine.fail = Some(Failure {
        code: Code::Retry,
        message: "key engine restarting, retry".into(),
    });
    let (a, audit) = w.ask(&CORE, &unseal("ha/core"));
    assert_eq!(a["status"], "retry");
    assert_eq!(a["retry_after_ms"], RETRY_AFTER_MS);
    assert_eq!(audit.unwrap().code, Code::Retry);
    w.engine.fail = Some(Failure {
        code: Code::Engine(Status::NotInitialised),
        message: Status::NotInitialised.message().into(),
    });
    let (a, _) = w.ask(&CORE, r#"{"v":1,"op":"status"}"#);
    assert_eq!(a["status"], "not_initialised");
    assert!(a.get("retry_after_ms").is_none());
}

#[test]
fn answers_and_audit_lines_never_carry_the_secret() {
    let w = World::new();
    let line = r#"{"v":1,"op":"seal","namespace":"ha/x","plaintext":"c2VjcmV0!"}"#;
    let (a, audit) = w.ask(&CORE, line);
    assert_eq!(a["status"], "bad_message");
    assert!(!a.to_string().contains("c2VjcmV0"));
    assert!(!audit.unwrap().line(&CORE).contains("c2VjcmV0"));
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

// ------------------------------------------------- callers in containers --
//
// On HA OS every caller is uid 0 in a container; the identity layer passes
// in the container's name (or that it could not read one). Here those are
// plain values: no Docker, no cgroups.

const ID_A: &str = "1eadbec5c29449835a2d80f19b69220672308202e2a4cc6647ba8e20b0727ea6";

fn cid(n: u8) -> ContainerId {
    ContainerId::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

/// A root process in the container `name`.
fn in_container(name: &str) -> Peer {
    Peer {
        uid: 0,
        gid: 0,
        pid: 4242,
        origin: Origin::Container {
            id: ContainerId::parse(ID_A).unwrap(),
            name: Some(name.into()),
        },
    }
}

/// The shipped policy (stock HA OS).
fn shipped() -> World {
    let mut w = World::new();
    w.policy = Policy::parse(include_str!("../../../../systemd/teed-policy.toml")).unwrap();
    w
}

#[test]
fn the_shipped_policy_serves_each_container_its_own_namespace() {
    let w = shipped();
    let ha = in_container("homeassistant");
    assert_eq!(w.status_of(&ha, &unseal("ha/core")), "ok");
    assert_eq!(w.status_of(&ha, &seal("ha/new")), "ok");
    assert_eq!(w.status_of(&ha, r#"{"v":1,"op":"pubkey"}"#), "ok");
    assert_eq!(w.status_of(&ha, &unseal("addon/core_mosquitto")), "denied");
    for name in ["addon_core_mosquitto", "app_core_mosquitto"] {
        let m = in_container(name);
        assert_eq!(w.status_of(&m, &unseal("addon/core_mosquitto")), "ok");
        assert_eq!(w.status_of(&m, &seal("addon/core_mosquitto/tls")), "ok");
        assert_eq!(w.status_of(&m, &unseal("addon/other")), "denied");
        assert_eq!(w.status_of(&m, &unseal("ha/core")), "denied");
        assert_eq!(w.status_of(&m, r#"{"v":1,"op":"status"}"#), "ok");
    }
    let other = in_container("app_other");
    assert_eq!(w.status_of(&other, &unseal("addon/other")), "ok");
    assert_eq!(
        w.status_of(&other, &unseal("addon/core_mosquitto")),
        "denied"
    );
    let sup = in_container("hassio_supervisor");
    assert_eq!(w.status_of(&sup, &seal("addon/core_mosquitto")), "ok");
    assert_eq!(w.status_of(&sup, &unseal("addon/core_mosquitto")), "denied");
    assert_eq!(w.status_of(&sup, &unseal("supervisor/token")), "ok");
    assert_eq!(w.status_of(&sup, &unseal("ha/core")), "denied");
    // Refusals never reached the engine.
    assert_eq!(w.engine_saw().len(), 12);
}

#[test]
fn unnamed_containers_root_and_the_unidentified_get_nothing() {
    let w = shipped();
    let nameless = Peer {
        origin: Origin::Container {
            id: cid(9),
            name: None,
        },
        ..in_container("x")
    };
    let unknown = Peer {
        origin: Origin::Unknown,
        ..in_container("x")
    };
    for (peer, says) in [
        (
            in_container("quirky_turing"),
            "container quirky_turing (uid 0 gid 0)",
        ),
        (in_container("hassio_dns"), "container hassio_dns"),
        (nameless, "whose name teed could not read"),
        (unknown, "whose container teed could not tell"),
        (Peer::host(0, 0, 1), "uid 0 gid 0"),
    ] {
        for line in [
            unseal("ha/core"),
            unseal("addon/x"),
            seal("addon/quirky_turing"),
            r#"{"v":1,"op":"status"}"#.into(),
        ] {
            let (a, _) = w.ask(&peer, &line);
            assert_eq!(a["status"], "denied", "{peer:?} {line}");
            assert!(a["message"].as_str().unwrap().contains(says), "{a}");
        }
    }
    assert!(w.engine_saw().is_empty());
}

#[test]
fn audit_lines_name_the_container() {
    let w = shipped();
    let (_, audit) = w.ask(&in_container("homeassistant"), &unseal("ha/core"));
    assert_eq!(
        audit.unwrap().line(&in_container("homeassistant")),
        "audit uid=0 gid=0 pid=4242 op=unseal ns=ha/core result=ok container=homeassistant cid=1eadbec5c294"
    );
    let nameless = Peer {
        origin: Origin::Container {
            id: cid(9),
            name: None,
        },
        ..in_container("x")
    };
    let (_, audit) = w.ask(&nameless, &unseal("ha/core"));
    assert_eq!(
        audit.unwrap().line(&nameless),
        "audit uid=0 gid=0 pid=4242 op=unseal ns=ha/core result=denied container=- cid=090909090909"
    );
    let unknown = Peer {
        origin: Origin::Unknown,
        ..in_container("x")
    };
    let (_, audit) = w.ask(&unknown, r#"{"v":1,"op":"status"}"#);
    assert!(audit
        .unwrap()
        .line(&unknown)
        .ends_with(" op=status ns=- result=denied container=?"));
    // A host process's line is exactly what it was before containers.
    let (_, audit) = w.ask(&Peer::host(0, 0, 7), r#"{"v":1,"op":"status"}"#);
    assert_eq!(
        audit.unwrap().line(&Peer::host(0, 0, 7)),
        "audit uid=0 gid=0 pid=7 op=status ns=- result=denied"
    );
}

#[test]
fn limits_are_per_container_although_all_are_uid_0() {
    let mut w = shipped();
    w.policy.limits.burst = 3;
    w.policy.limits.failed_unseals_free = 1;
    w.engine.fail = Some(Failure {
        code: Code::Engine(Status::BlobRejected),
        message: Status::BlobRejected.message().into(),
    });
    let flood = in_container("addon_core_mosquitto");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(w.status_of(&flood, &unseal("addon/core_mosquitto")));
    }
    assert!(statuses.iter().any(|s| s == "rate_limited"), "{statuses:?}");
    // Home Assistant (also uid 0) has its own bucket and no back-off.
    w.engine.fail = None;
    let ha = in_container("homeassistant");
    assert_eq!(w.status_of(&ha, &unseal("ha/core")), "ok");
    // A recreated add-on container (new id, same name) keeps its limits.
    let recreated = Peer {
        origin: Origin::Container {
            id: cid(7),
            name: Some("addon_core_mosquitto".into()),
        },
        ..flood.clone()
    };
    assert_eq!(
        w.status_of(&recreated, &unseal("addon/core_mosquitto")),
        "rate_limited"
    );
}

#[test]
fn callers_no_rule_names_cannot_take_the_slots_home_assistant_needs() {
    let mut w = shipped();
    w.policy.limits.max_connections = 8;
    w.policy.limits.max_connections_per_caller = 4;
    w.policy.limits.max_unnamed_connections = 2;
    let strangers = [
        in_container("quirky_turing"),
        in_container("hassio_dns"),
        Peer::host(0, 0, 1),
        Peer::host(1000, 1000, 2),
        Peer {
            origin: Origin::Unknown,
            ..in_container("x")
        },
    ];
    // Every stranger tries to take every slot.
    let mut held = Vec::new();
    let mut turned_away = 0;
    for _ in 0..8 {
        for s in &strangers {
            match admit(s, w.now, &w.policy, &w.callers) {
                Ok(a) => held.push(a),
                Err(r) => {
                    assert_eq!(r, Refusal::Busy);
                    turned_away += 1;
                }
            }
        }
    }
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|a| !a.named));
    assert_eq!(turned_away, 38);
    // Home Assistant still gets its share, and add-ons theirs.
    let ha = in_container("homeassistant");
    for _ in 0..4 {
        held.push(admit(&ha, w.now, &w.policy, &w.callers).unwrap());
    }
    assert_eq!(
        admit(&ha, w.now, &w.policy, &w.callers),
        Err(Refusal::TooManyConnections)
    );
    let addon = in_container("addon_core_mosquitto");
    held.push(admit(&addon, w.now, &w.policy, &w.callers).unwrap());
    held.push(admit(&addon, w.now, &w.policy, &w.callers).unwrap());
    assert_eq!(
        admit(&addon, w.now, &w.policy, &w.callers),
        Err(Refusal::Busy)
    );
    // Slots come back when connections end.
    for a in held.drain(..) {
        release(&a, w.now, &w.callers);
    }
    assert_eq!(lock(&w.callers).connections(), 0);
    assert_eq!(lock(&w.callers).unnamed_connections(), 0);
    assert!(admit(&ha, w.now, &w.policy, &w.callers).unwrap().named);
}
