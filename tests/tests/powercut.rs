//! `teectl` killed with SIGKILL at every write step of the simulator's RPMB
//! image, for every operation that writes state; nothing may be lost.
//!
//! A `teectl` built with the `test-hooks` feature kills itself just before
//! the N-th mutating step (`write_at`, `sync`) of its `rpmb-sim` image
//! (`HAKEYS_SIM_KILL_AT_WRITE=N`, `host/SPEC.md` §4). For each operation,
//! starting every time from a copy of the same state directory, N runs from
//! 1 until the operation completes without being killed. After each kill a
//! normal `teectl` must find the engine answering, the old state or the new
//! one (never a third, never "not initialised" once an init completed),
//! every blob sealed before still opening unless a retire that took effect
//! removed its epoch (or a new identity replaced the key), and the
//! operation completing when run again.

use std::os::unix::process::ExitStatusExt;

use hakeys_e2e::{run_with_stdin, teectl_test_hooks_bin, Board};

/// rpmb-sim's commit of one authenticated write: journal write, sync,
/// blocks in place, state record, sync (`rpmb-sim/SPEC.md` §7).
const STEPS_PER_WRITE: u64 = 5;
/// Programming the RPMB key, on a device's first write: state record, sync.
const STEPS_PER_KEY: u64 = 2;

/// A blob sealed before the operation.
struct Sealed {
    blob: Vec<u8>,
    secret: Vec<u8>,
    /// The epoch it was sealed under; `None` for a blob sealed offline to
    /// the device key (no epoch).
    epoch: Option<u64>,
}

/// What a normal `teectl` reports: the identity (public key PEM) and the
/// epochs, or `None` if not initialised. Panics if the engine does not
/// answer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    pubkey: Vec<u8>,
    epoch: u64,
    min_epoch: u64,
}

fn observe(b: &Board, what: &str) -> Option<Seen> {
    let r = b.run(&["status", "--json"], b"");
    assert_eq!(r.code(), 0, "{what}: status: {}", r.stderr());
    let st: serde_json::Value = serde_json::from_slice(r.stdout()).expect("status JSON");
    if st["initialised"] != true {
        return None;
    }
    Some(Seen {
        pubkey: b.ok(&["pubkey"], b""),
        epoch: st["epoch"].as_u64().expect("epoch"),
        min_epoch: st["min_epoch"].as_u64().expect("min_epoch"),
    })
}

fn seal(b: &Board, secret: &str) -> Sealed {
    let epoch = observe(b, "seal").expect("initialised").epoch;
    Sealed {
        blob: b.seal("ha/core", secret.as_bytes()),
        secret: secret.as_bytes().to_vec(),
        epoch: Some(epoch),
    }
}

/// One state-changing operation and the state it starts from.
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    /// The state directory before, and blobs sealed on it.
    setup: fn() -> (Board, Vec<Sealed>),
    /// Whether the operation makes a new identity (then the new state's
    /// key is random and compared by epochs only).
    new_identity: bool,
    /// Expected cut points: the image write steps the operation makes.
    steps: u64,
}

fn fresh() -> (Board, Vec<Sealed>) {
    (Board::new(), Vec::new())
}

fn initialised() -> (Board, Vec<Sealed>) {
    let b = Board::new();
    b.ok(&["init"], b"");
    let blobs = vec![seal(&b, "sealed at epoch 1")];
    (b, blobs)
}

fn rotated() -> (Board, Vec<Sealed>) {
    let (b, mut blobs) = initialised();
    b.ok(&["rotate"], b"");
    blobs.push(seal(&b, "sealed at epoch 2"));
    (b, blobs)
}

fn v1_device() -> (Board, Vec<Sealed>) {
    let (b, mut v1) = Board::from_v1_fixture();
    // boot/ blobs first: the first unseal outside boot/ ends the boot phase.
    v1.sort_by_key(|v| !v.namespace.starts_with("boot/"));
    let blobs = v1
        .into_iter()
        .map(|v| Sealed {
            // The fixture's device blobs were sealed at epochs 1 and 2; the
            // one sealed offline (`addon/` namespace) has none.
            epoch: if v.namespace.starts_with("addon/") {
                None
            } else if v.secret.ends_with(b"2") {
                Some(2)
            } else {
                Some(1)
            },
            blob: v.blob,
            secret: v.secret,
        })
        .collect();
    (b, blobs)
}

const CASES: &[Case] = &[
    Case {
        name: "init",
        args: &["init"],
        setup: fresh,
        new_identity: true,
        // Key programming, slot A, marker.
        steps: STEPS_PER_KEY + 2 * STEPS_PER_WRITE,
    },
    Case {
        name: "rotate",
        args: &["rotate"],
        setup: initialised,
        new_identity: false,
        steps: STEPS_PER_WRITE,
    },
    Case {
        name: "retire",
        args: &["retire", "--below", "2"],
        setup: rotated,
        new_identity: false,
        steps: STEPS_PER_WRITE,
    },
    Case {
        name: "init --new-identity",
        args: &[
            "init",
            "--new-identity",
            "--yes-destroy-every-sealed-secret",
        ],
        setup: rotated,
        new_identity: true,
        // The free slot, the other slot, the marker.
        steps: 3 * STEPS_PER_WRITE,
    },
    Case {
        name: "rotate on a v1 device (migration)",
        args: &["rotate"],
        setup: v1_device,
        new_identity: false,
        // Slot A, then the marker; the v1 block is never written.
        steps: 2 * STEPS_PER_WRITE,
    },
    Case {
        name: "retire on a v1 device (migration)",
        args: &["retire", "--below", "2"],
        setup: v1_device,
        new_identity: false,
        steps: 2 * STEPS_PER_WRITE,
    },
];

/// Whether `seen` is the state `case` leads to from `old`, as `new` (the
/// state an uncut run reached) shows.
fn is_new(case: &Case, old: &Option<Seen>, new: &Seen, seen: &Seen) -> bool {
    if case.new_identity {
        old.as_ref().is_none_or(|o| o.pubkey != seen.pubkey)
            && (seen.epoch, seen.min_epoch) == (new.epoch, new.min_epoch)
    } else {
        seen == new
    }
}

/// Check the blobs sealed before against what the board holds now.
fn blobs_survive(b: &Board, blobs: &[Sealed], old: &Option<Seen>, seen: &Seen, what: &str) {
    let same_identity = old.as_ref().is_some_and(|o| o.pubkey == seen.pubkey);
    for s in blobs {
        let r = b.run(&["unseal"], &s.blob);
        if !same_identity {
            r.fails_with(5);
        } else if s.epoch.is_some_and(|e| e < seen.min_epoch) {
            r.fails_with(4);
        } else {
            assert_eq!(
                (r.code(), r.stdout()),
                (0, &s.secret[..]),
                "{what}: a blob sealed before no longer opens: {}",
                r.stderr()
            );
        }
    }
}

/// Run `case` with the kill at every step; returns the number of cut points.
fn cut_everywhere(case: &Case) -> u64 {
    let (base, blobs) = (case.setup)();
    let old = observe(&base, case.name);
    let new = {
        let b = base.copy();
        b.ok(case.args, b"");
        observe(&b, case.name).expect("initialised after the operation")
    };
    assert!(
        old.as_ref() != Some(&new),
        "{}: changes the state",
        case.name
    );
    for n in 1..=200u64 {
        let b = base.copy();
        let mut cmd = b.command_with(teectl_test_hooks_bin(), case.args);
        cmd.env("HAKEYS_SIM_KILL_AT_WRITE", n.to_string());
        let out = run_with_stdin(&mut cmd, b"");
        let what = format!("{} killed at image write step {n}", case.name);
        if out.status.success() {
            let seen = observe(&b, &what).expect("initialised");
            assert!(is_new(case, &old, &new, &seen), "{what}: {seen:?}");
            return n - 1;
        }
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{what}: neither completed nor killed: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = observe(&b, &what);
        match (&old, &seen) {
            (Some(_), None) => panic!("{what}: initialised before, not initialised now"),
            (_, Some(s)) => {
                assert!(
                    old.as_ref() == Some(s) || is_new(case, &old, &new, s),
                    "{what}: a third state {s:?} (old {old:?}, new {new:?})"
                );
                blobs_survive(&b, &blobs, &old, s, &what);
            }
            (None, None) => {}
        }
        // The board is usable: the operation completes when run again.
        b.ok(case.args, b"");
    }
    panic!("{}: never completed", case.name);
}

#[test]
fn a_sigkill_at_every_image_write_loses_nothing() {
    let mut report = Vec::new();
    for case in CASES {
        let cuts = cut_everywhere(case);
        report.push(format!("{}: {cuts} cut points", case.name));
        assert_eq!(
            cuts, case.steps,
            "{}: the operation made another number of image write steps than expected",
            case.name
        );
    }
    let total: u64 = CASES.iter().map(|c| c.steps).sum();
    eprintln!("{}; {total} cuts, 0 lost", report.join("; "));
    assert!(total >= 50, "too few cut points to mean anything");
}

/// The state directory of the previous release keeps working: its blobs
/// open, nothing is written until the first state change, which migrates.
#[test]
fn a_v1_state_directory_keeps_working() {
    let (mut b, blobs) = v1_device();
    let image = std::fs::read(b.state().join("rpmb.img")).unwrap();
    let st = observe(&b, "v1").expect("initialised");
    assert_eq!((st.epoch, st.min_epoch), (2, 1));
    for s in &blobs {
        assert_eq!(b.ok(&["unseal"], &s.blob), s.secret);
    }
    let again = String::from_utf8(b.ok(&["init"], b"")).unwrap();
    assert!(again.contains("already initialised"), "{again}");
    assert!(
        std::fs::read(b.state().join("rpmb.img")).unwrap() == image,
        "reading a v1 device wrote to it"
    );
    assert_eq!(
        b.ok(&["rotate"], b""),
        b"epoch 3 (oldest accepted: 1)\n".to_vec()
    );
    assert_eq!(b.ok(&["pubkey"], b""), st.pubkey, "same identity");
    // A new boot (the first loop's ha/ unseal ended the boot phase).
    b.reboot();
    for s in &blobs {
        assert_eq!(b.ok(&["unseal"], &s.blob), s.secret);
    }
    b.ok(&["retire", "--below", "3"], b"");
    b.reboot();
    let err = b.run(&["unseal"], &blobs[0].blob).fails_with(4);
    assert!(err.contains("retired"), "{err}");
}
