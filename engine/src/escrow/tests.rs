//! Recovery: `reseal` to another device, the escrow (enrolment, what it
//! opens, what it refuses), its golden fixture and an independent
//! implementation that opens it.

use std::vec::Vec;

use hakeys_proto::{
    BootDoneRequest, Call, EscrowRequest, InitResponse, Request, ResealRequest, Response,
    RetireRequest, Status,
};
use p256::SecretKey;

use super::*;
use crate::tests::{call, device_pubkey, golden, reference, seal, unseal, TestEntropy, DEVICE_SK};
use crate::{Engine, MemoryStorage};

type E = Engine<MemoryStorage, TestEntropy>;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.trim()).expect("test hex")
}

fn device(seed: u64) -> E {
    let mut e = Engine::new(MemoryStorage::default(), TestEntropy(seed));
    assert_eq!(
        call(&mut e, Request::Init),
        Ok(Response::Init(InitResponse {
            created: true,
            epoch: 1
        }))
    );
    e
}

fn sec1(pk: &PublicKey) -> heapless::Vec<u8, PUBKEY_LEN> {
    crypto::sec1_uncompressed(pk)[..].try_into().unwrap()
}

fn reseal(e: &mut E, blob: &[u8], to: &PublicKey, allow_boot: bool) -> Result<Vec<u8>, Status> {
    let req = Request::Reseal(ResealRequest {
        blob: blob.try_into().unwrap(),
        to: sec1(to),
        allow_boot,
    });
    match call(e, req)? {
        Response::Reseal(b) => Ok(b.blob.to_vec()),
        other => panic!("{other:?}"),
    }
}

/// `rewrap`: the deliberate import of a blob sealed offline into a device
/// blob of `e`.
fn import(e: &mut E, blob: &[u8]) -> Vec<u8> {
    let req = Request::Rewrap(hakeys_proto::RewrapRequest {
        blob: blob.try_into().unwrap(),
    });
    match call(e, req) {
        Ok(hakeys_proto::Response::Rewrap(b)) => b.blob.to_vec(),
        other => panic!("rewrap: {other:?}"),
    }
}

fn recovery_key(seed: u8) -> SecretKey {
    SecretKey::from_slice(&[seed; 32]).unwrap()
}

fn escrow(e: &mut E, rk: &SecretKey, replace: bool) -> Result<Vec<u8>, Status> {
    let req = Request::Escrow(EscrowRequest {
        recovery_key: sec1(&rk.public_key()),
        replace,
    });
    match call(e, req)? {
        Response::Escrow(r) => Ok(r.escrow.to_vec()),
        other => panic!("{other:?}"),
    }
}

fn enrolled(e: &mut E) -> Option<Vec<u8>> {
    match call(e, Request::RecoveryStatus) {
        Ok(Response::RecoveryStatus(r)) => r.enrolled.map(|f| f.to_vec()),
        other => panic!("{other:?}"),
    }
}

fn boot_done(e: &mut E) {
    call(e, BootDoneRequest.into_request()).unwrap();
}

fn recovered(x: &Escrowed, blob: &[u8]) -> Result<(std::string::String, Vec<u8>), EngineError> {
    let mut out = Secret::new();
    let ns = x.open_blob(blob, &mut out)?;
    Ok((ns.as_str().into(), out.to_vec()))
}

// ---------------------------------------------------------------- reseal

#[test]
fn reseal_moves_a_blob_to_another_device_without_releasing_it() {
    let mut a = device(1);
    let mut b = device(2);
    let b_pub = device_pubkey(&mut b);
    let blob = seal(&mut a, "ha/core", b"mqtt-password");
    let moved = reseal(&mut a, &blob, &b_pub, false).unwrap();
    let p = blob::parse(&moved).unwrap();
    assert_eq!(
        (p.kind, p.namespace, p.epoch),
        (Kind::ToDevice, "ha/core", 0)
    );
    assert_eq!(unseal(&mut b, &moved).as_deref(), Ok(&b"mqtt-password"[..]));
    // The source still opens its own blob; it cannot open the moved one.
    assert_eq!(unseal(&mut a, &blob).as_deref(), Ok(&b"mqtt-password"[..]));
    assert_eq!(unseal(&mut a, &moved), Err(Status::BlobRejected));
    // A blob sealed offline to A moves as well, and onwards from B to C.
    let a_pub = device_pubkey(&mut a);
    let offline = blob::seal_to_device(&a_pub, "addon/x", b"offline", &mut TestEntropy(9)).unwrap();
    let moved = reseal(&mut a, &offline, &b_pub, false).unwrap();
    assert_eq!(unseal(&mut b, &moved).as_deref(), Ok(&b"offline"[..]));
    let mut c = device(3);
    let c_pub = device_pubkey(&mut c);
    let onwards = reseal(&mut b, &moved, &c_pub, false).unwrap();
    assert_eq!(unseal(&mut c, &onwards).as_deref(), Ok(&b"offline"[..]));
    // Every reseal is a fresh blob (fresh ephemeral key and salt).
    let again = reseal(&mut a, &blob, &b_pub, false).unwrap();
    assert_ne!(again, reseal(&mut a, &blob, &b_pub, false).unwrap());
    // Not initialised: nothing to open with.
    let mut fresh = Engine::new(MemoryStorage::default(), TestEntropy(4));
    assert_eq!(
        reseal(&mut fresh, &blob, &b_pub, false),
        Err(Status::NotInitialised)
    );
}

#[test]
fn reseal_refuses_boot_unless_allowed_and_respects_the_boot_lock() {
    let mut a = device(5);
    let mut b = device(6);
    let b_pub = device_pubkey(&mut b);
    let luks = seal(&mut a, "boot/luks-data", b"luks key");
    let bare = seal(&mut a, "boot", b"bare boot namespace");
    let ha = seal(&mut a, "ha/core", b"pw");
    for blob in [&luks, &bare] {
        assert_eq!(
            reseal(&mut a, blob, &b_pub, false),
            Err(Status::BootNotAllowed)
        );
    }
    let moved = reseal(&mut a, &luks, &b_pub, true).unwrap();
    // It arrives sealed offline, which boot/ refuses until the new board's
    // owner imports it deliberately (rewrap).
    assert_eq!(unseal(&mut b, &moved), Err(Status::OfflineRefused));
    let imported = import(&mut b, &moved);
    assert_eq!(unseal(&mut b, &imported).as_deref(), Ok(&b"luks key"[..]));
    // A blob sealed offline in boot/ is not resealed either.
    assert_eq!(
        reseal(&mut b, &moved, &b_pub, true),
        Err(Status::OfflineRefused)
    );
    // A reseal outside boot/ does not end the boot phase (unlike an unseal).
    reseal(&mut a, &ha, &b_pub, false).unwrap();
    assert!(!a.boot_locked());
    assert!(reseal(&mut a, &bare, &b_pub, true).is_ok());
    // After boot-done, boot/ stays locked, allowed or not; the rest moves.
    boot_done(&mut a);
    assert_eq!(reseal(&mut a, &luks, &b_pub, true), Err(Status::BootLocked));
    assert_eq!(
        reseal(&mut a, &luks, &b_pub, false),
        Err(Status::BootNotAllowed)
    );
    assert!(reseal(&mut a, &ha, &b_pub, false).is_ok());
    // `allow_boot` on a non-boot blob changes nothing.
    assert!(reseal(&mut a, &ha, &b_pub, true).is_ok());
}

#[test]
fn reseal_respects_the_epoch_floor_and_refuses_what_the_device_cannot_open() {
    let mut a = device(7);
    let mut b = device(8);
    let b_pub = device_pubkey(&mut b);
    let old = seal(&mut a, "ha/core", b"epoch 1");
    call(&mut a, Request::Rotate).unwrap();
    let new = seal(&mut a, "ha/core", b"epoch 2");
    call(&mut a, Request::Retire(RetireRequest { below: 2 })).unwrap();
    assert_eq!(
        reseal(&mut a, &old, &b_pub, false),
        Err(Status::EpochRetired)
    );
    assert!(reseal(&mut a, &new, &b_pub, false).is_ok());
    // Another device's blob, a tampered blob, garbage: rejected, opaquely.
    call(&mut b, Request::Rotate).unwrap();
    let foreign = seal(&mut b, "ha/core", b"b's");
    assert_eq!(
        reseal(&mut a, &foreign, &b_pub, false),
        Err(Status::BlobRejected)
    );
    for i in 0..new.len() {
        let mut t = new.clone();
        t[i] ^= 0x01;
        let r = reseal(&mut a, &t, &b_pub, false);
        assert!(
            matches!(
                r,
                Err(Status::BlobRejected | Status::EpochRetired | Status::BootNotAllowed)
            ),
            "byte {i}: {r:?}"
        );
    }
    assert_eq!(
        reseal(&mut a, b"HKSB", &b_pub, false),
        Err(Status::BlobRejected)
    );
}

#[test]
fn reseal_and_escrow_refuse_a_key_that_is_not_an_uncompressed_point() {
    let mut a = device(9);
    let blob = seal(&mut a, "ha/core", b"pw");
    let good = crypto::sec1_uncompressed(&device_pubkey(&mut a));
    let mut off_curve = good;
    off_curve[64] ^= 1;
    let mut compressed = std::vec![0x02 | (good[64] & 1)];
    compressed.extend_from_slice(&good[1..33]);
    let bad: [&[u8]; 5] = [&off_curve, &compressed, &[0u8; 65], &[4u8], &[]];
    for key in bad {
        let req = Request::Reseal(ResealRequest {
            blob: blob[..].try_into().unwrap(),
            to: key.try_into().unwrap(),
            allow_boot: false,
        });
        assert_eq!(call(&mut a, req), Err(Status::InvalidArgument), "{key:?}");
        let req = Request::Escrow(EscrowRequest {
            recovery_key: key.try_into().unwrap(),
            replace: false,
        });
        assert_eq!(call(&mut a, req), Err(Status::InvalidArgument), "{key:?}");
    }
    assert_eq!(enrolled(&mut a), None, "nothing was enrolled");
}

// ---------------------------------------------------------------- escrow

#[test]
fn an_escrow_opens_every_blob_of_the_device_off_the_device() {
    let mut a = device(10);
    let rk = recovery_key(0x42);
    let a_pub = device_pubkey(&mut a);
    let e1 = seal(&mut a, "ha/core", b"epoch one");
    let luks = seal(&mut a, "boot/luks-data", b"luks");
    let offline =
        blob::seal_to_device(&a_pub, "addon/mqtt", b"sealed offline", &mut TestEntropy(3)).unwrap();
    boot_done(&mut a);
    let x = escrow(&mut a, &rk, false).unwrap();
    assert_eq!(x.len(), ESCROW_LEN);
    // Rotation after the escrow: the same root key derives every epoch, so
    // the escrow needs no refresh.
    call(&mut a, Request::Rotate).unwrap();
    call(&mut a, Request::Rotate).unwrap();
    let e3 = seal(&mut a, "ha/core", b"epoch three");

    let opened = open(&rk, &x).unwrap();
    assert_eq!((opened.epoch(), opened.min_epoch()), (1, 1));
    assert_eq!(
        opened.device_public_key().unwrap(),
        crypto::sec1_uncompressed(&a_pub)
    );
    assert_eq!(
        header(&x).unwrap().device,
        crypto::sec1_uncompressed(&a_pub)
    );
    for (blob, ns, pt) in [
        (&e1, "ha/core", &b"epoch one"[..]),
        (&e3, "ha/core", b"epoch three"),
        (&luks, "boot/luks-data", b"luks"),
        (&offline[..].to_vec(), "addon/mqtt", b"sealed offline"),
    ] {
        assert_eq!(recovered(&opened, blob).unwrap(), (ns.into(), pt.to_vec()));
    }
    // What it opens can be sealed on to a new device.
    let mut b = device(11);
    let b_pub = device_pubkey(&mut b);
    let mut pt = Secret::new();
    let ns = opened.open_blob(&luks, &mut pt).unwrap();
    let moved = blob::seal_to_device(&b_pub, &ns, &pt, &mut TestEntropy(12)).unwrap();
    assert_eq!(unseal(&mut b, &moved), Err(Status::OfflineRefused));
    let imported = import(&mut b, &moved);
    assert_eq!(unseal(&mut b, &imported).as_deref(), Ok(&b"luks"[..]));
    // Escrow again to the same key after boot-done: allowed, a new escrow
    // with the current epochs, no state written.
    let writes = a.storage_mut().clone();
    let x2 = escrow(&mut a, &rk, false).unwrap();
    assert_ne!(x, x2);
    let o2 = open(&rk, &x2).unwrap();
    assert_eq!((o2.epoch(), o2.min_epoch()), (3, 1));
    let mut before = writes;
    for id in crate::ObjectId::ALL {
        assert_eq!(
            before.object_mut(id).map(|o| o.to_vec()),
            a.storage_mut().object_mut(id).map(|o| o.to_vec())
        );
    }
}

#[test]
fn the_first_escrow_enrols_its_key_and_later_ones_must_use_it() {
    let mut a = device(20);
    let (k1, k2, k3) = (recovery_key(1), recovery_key(2), recovery_key(3));
    assert_eq!(enrolled(&mut a), None);
    // Enrolling needs no boot phase.
    boot_done(&mut a);
    escrow(&mut a, &k1, false).unwrap();
    let fp1 = fingerprint(&k1.public_key()).to_vec();
    assert_eq!(enrolled(&mut a), Some(fp1.clone()));
    // Another key: refused, also with `replace` once the boot phase ended.
    assert_eq!(escrow(&mut a, &k2, false), Err(Status::RecoveryKeyMismatch));
    assert_eq!(escrow(&mut a, &k2, true), Err(Status::RecoveryKeyMismatch));
    assert_eq!(enrolled(&mut a), Some(fp1.clone()));
    // The enrolment survives a restart of the engine.
    let mut again = Engine::new(a.storage_mut().clone(), TestEntropy(21));
    assert_eq!(enrolled(&mut again), Some(fp1.clone()));
    assert_eq!(
        escrow(&mut again, &k2, false),
        Err(Status::RecoveryKeyMismatch)
    );
    // In the boot phase (a fresh engine: the next boot), `replace` replaces.
    let x2 = escrow(&mut again, &k2, true).unwrap();
    assert_eq!(
        enrolled(&mut again),
        Some(fingerprint(&k2.public_key()).to_vec())
    );
    assert!(open(&k2, &x2).is_ok());
    assert_eq!(
        escrow(&mut again, &k1, false),
        Err(Status::RecoveryKeyMismatch)
    );
    // `replace` with no key enrolled, or with the enrolled key, just works.
    let mut b = device(22);
    escrow(&mut b, &k3, true).unwrap();
    escrow(&mut b, &k3, true).unwrap();
    // A new identity forgets the enrolment, with the root key it belonged to.
    call(&mut again, Request::InitNewIdentity).unwrap();
    assert_eq!(enrolled(&mut again), None);
    escrow(&mut again, &k3, false).unwrap();
    // Not initialised.
    let mut fresh = Engine::new(MemoryStorage::default(), TestEntropy(23));
    assert_eq!(escrow(&mut fresh, &k1, false), Err(Status::NotInitialised));
    assert_eq!(
        call(&mut fresh, Request::RecoveryStatus),
        Err(Status::NotInitialised)
    );
}

#[test]
fn an_escrow_made_before_a_retire_still_opens_the_retired_epoch() {
    let mut a = device(30);
    let rk = recovery_key(5);
    let old = seal(&mut a, "ha/core", b"epoch one");
    let before = escrow(&mut a, &rk, false).unwrap();
    call(&mut a, Request::Rotate).unwrap();
    let new = seal(&mut a, "ha/core", b"epoch two");
    call(&mut a, Request::Retire(RetireRequest { below: 2 })).unwrap();
    let after = escrow(&mut a, &rk, false).unwrap();
    // The board refuses the retired blob.
    assert_eq!(unseal(&mut a, &old), Err(Status::EpochRetired));
    // The escrow made before the retire opens it; the one made after does not.
    let before = open(&rk, &before).unwrap();
    let after = open(&rk, &after).unwrap();
    assert_eq!((after.epoch(), after.min_epoch()), (2, 2));
    assert_eq!(recovered(&before, &old).unwrap().1, b"epoch one");
    assert_eq!(
        recovered(&after, &old).map(|_| ()),
        Err(EngineError::EpochRetired)
    );
    for x in [&before, &after] {
        assert_eq!(recovered(x, &new).unwrap().1, b"epoch two");
    }
}

#[test]
fn an_escrow_applies_its_floor_to_offline_generations_not_to_unmarked_blobs() {
    let mut a = device(31);
    let rk = recovery_key(5);
    let pk = device_pubkey(&mut a);
    let gen1 = blob::seal_to_device_in(&pk, "ha/core", b"one", 1, &mut TestEntropy(1)).unwrap();
    let unmarked = blob::seal_to_device(&pk, "ha/core", b"old", &mut TestEntropy(2)).unwrap();
    call(&mut a, Request::Rotate).unwrap();
    let gen2 = blob::seal_to_device_in(&pk, "ha/core", b"two", 2, &mut TestEntropy(3)).unwrap();
    call(&mut a, Request::Retire(RetireRequest { below: 2 })).unwrap();
    call(&mut a, Request::RetireUnmarked).unwrap();
    let after = open(&rk, &escrow(&mut a, &rk, false).unwrap()).unwrap();
    assert_eq!(
        recovered(&after, &gen1).map(|_| ()),
        Err(EngineError::EpochRetired)
    );
    assert_eq!(recovered(&after, &gen2).unwrap().1, b"two");
    // The escrow does not record that the board retired unmarked blobs:
    // policy the escrow cannot carry (docs/security-model.md, "Recovery").
    assert_eq!(unseal(&mut a, &unmarked), Err(Status::EpochRetired));
    assert_eq!(recovered(&after, &unmarked).unwrap().1, b"old");
}

#[test]
fn an_escrow_opens_no_blob_of_another_device() {
    let mut a = device(40);
    let mut b = device(41);
    let rk = recovery_key(6);
    let xa = open(&rk, &escrow(&mut a, &rk, false).unwrap()).unwrap();
    let b_pub = device_pubkey(&mut b);
    let kind1 = seal(&mut b, "ha/core", b"b");
    let kind2 = blob::seal_to_device(&b_pub, "ha/core", b"b", &mut TestEntropy(1)).unwrap();
    for blob in [&kind1[..], &kind2[..]] {
        assert!(matches!(
            recovered(&xa, blob),
            Err(EngineError::Blob(blob::BlobError::Unauthentic))
        ));
    }
    assert!(matches!(
        recovered(&xa, b"not a blob"),
        Err(EngineError::Blob(_))
    ));
}

#[test]
fn every_change_to_an_escrow_and_every_wrong_key_is_refused() {
    let mut a = device(50);
    let rk = recovery_key(7);
    let x = escrow(&mut a, &rk, false).unwrap();
    assert!(open(&rk, &x).is_ok());
    assert_eq!(
        open(&recovery_key(8), &x).map(|_| ()),
        Err(EscrowError::WrongRecoveryKey)
    );
    for i in 0..x.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = x.clone();
            t[i] ^= mask;
            let r = open(&rk, &t).map(|_| ());
            let want: &[EscrowError] = match i {
                0..4 => &[EscrowError::Malformed],
                4 => &[EscrowError::UnsupportedVersion(t[4])],
                // A changed point is usually off the curve; if not, the
                // recovery key no longer matches or the tag fails.
                70..135 => &[EscrowError::Malformed, EscrowError::WrongRecoveryKey],
                _ => &[EscrowError::Malformed, EscrowError::Unauthentic],
            };
            assert!(
                r.as_ref().is_err_and(|e| want.contains(e)),
                "byte {i} ^ {mask:#x}: {r:?}"
            );
        }
    }
    for len in 0..x.len() {
        assert!(open(&rk, &x[..len]).is_err(), "truncated to {len}");
    }
    let mut longer = x.clone();
    longer.push(0);
    assert_eq!(open(&rk, &longer).map(|_| ()), Err(EscrowError::Malformed));
}

#[test]
fn errors_say_what_failed_and_nothing_else() {
    for e in [
        EscrowError::Malformed,
        EscrowError::UnsupportedVersion(9),
        EscrowError::WrongRecoveryKey,
        EscrowError::Unauthentic,
    ] {
        assert!(!std::format!("{e}").is_empty());
    }
    assert_eq!(EngineError::BootNotAllowed.status(), Status::BootNotAllowed);
    assert_eq!(
        EngineError::RecoveryKeyMismatch.status(),
        Status::RecoveryKeyMismatch
    );
}

// ---------------------------------------------------------------- fixtures

const RECOVERY_SK: &str = "519b423d715f8b581f4fa8ee59f4771a5b44c8130b4e3eacca54a56dda72b464";
const EPHEMERAL_SK: &str = "0f56db78ca460b055c500064824bed999a25aaf48ebb519ac201537b85479813";

/// The escrow of the fixtures' state (root key 0x11.., the RFC 6979 device
/// key, epoch 7, oldest 3: the device blob fixture is of epoch 3) to a fixed
/// recovery key, with a fixed ephemeral key and salt 0x33...
fn escrow_fixture() -> Vec<u8> {
    let st = State {
        root_key: crate::tests::ROOT,
        device_key: h(DEVICE_SK).try_into().unwrap(),
        epoch: 7,
        min_epoch: 3,
        recovery: crate::state::NO_RECOVERY_KEY,
        unmarked_offline_retired: false,
    };
    let rk = SecretKey::from_slice(&h(RECOVERY_SK)).unwrap();
    let eph = SecretKey::from_slice(&h(EPHEMERAL_SK)).unwrap();
    let d = crate::slots::device_public(&st).unwrap();
    seal_with(&rk.public_key(), &st, &d, &eph, &[0x33; 16])
        .unwrap()
        .to_vec()
}

#[test]
fn golden_escrow() {
    let x = escrow_fixture();
    golden("escrow_v1", &x);
    assert_eq!(&x[..5], b"HKES\x01");
    let rk = SecretKey::from_slice(&h(RECOVERY_SK)).unwrap();
    let o = open(&rk, &x).unwrap();
    assert_eq!((o.epoch(), o.min_epoch()), (7, 3));
    // The committed blob fixtures open through it.
    for (name, pt) in [
        ("blob_device_v1", &b"hunter2"[..]),
        ("blob_to_device_v1", b"mqtt-password"),
    ] {
        let path = std::format!("{}/tests/golden/{name}.hex", env!("CARGO_MANIFEST_DIR"));
        let blob = h(&std::fs::read_to_string(path).unwrap());
        assert_eq!(recovered(&o, &blob).unwrap().1, pt, "{name}");
    }
}

#[test]
fn an_independent_implementation_opens_escrows_and_resealed_blobs() {
    // The fixture.
    let x = escrow_fixture();
    assert_eq!(
        reference(&["open-escrow-hex", RECOVERY_SK, &hex::encode(&x)]),
        std::format!("7 3 {} {}", "11".repeat(32), DEVICE_SK.to_lowercase())
    );
    // An escrow the engine made, and a blob it resealed to another device.
    let mut a = device(60);
    let mut b = device(61);
    let rk = recovery_key(9);
    call(&mut a, Request::Rotate).unwrap();
    call(&mut a, Request::Retire(RetireRequest { below: 2 })).unwrap();
    let x = escrow(&mut a, &rk, false).unwrap();
    let out = reference(&["open-escrow-hex", &hex::encode([9u8; 32]), &hex::encode(&x)]);
    assert!(out.starts_with("2 2 "), "{out}");
    let b_pub = device_pubkey(&mut b);
    let blob = seal(&mut a, "ha/core", b"moved");
    let moved = reseal(&mut a, &blob, &b_pub, false).unwrap();
    let b_sk = hex::encode(b.cached.as_ref().unwrap().state.device_key);
    assert_eq!(
        reference(&["open-to-device", &b_sk, &hex::encode(&moved)]),
        hex::encode(b"moved")
    );
}
