//! The state layout under a cut at every write of every state-changing
//! operation (five ways for a write to end), lost and damaged objects, and
//! v1 records carried over.

use std::vec::Vec;

use hakeys_proto::{InitResponse, Request, Response, RetireRequest, Status};

use super::*;
use crate::tests::{call, golden, seal, unseal, TestEntropy, DEVICE_SK, ROOT};
use crate::{escrow, Engine, Entropy, MemoryStorage};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.trim()).expect("test hex")
}

/// How the write that the power cut interrupts ends.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Nothing reached the medium.
    Lost,
    /// All of it reached the medium, but the caller saw a failure.
    WrittenThenFailed,
    /// The first half of the new bytes over the old ones (or alone, if the
    /// object did not exist).
    TornPrefix,
    /// The object holds garbage of the new length.
    Garbage,
    /// The object is gone (OP-TEE's create-and-rename path, issue 9).
    Vanished,
}

const CUTS: [Cut; 5] = [
    Cut::Lost,
    Cut::WrittenThenFailed,
    Cut::TornPrefix,
    Cut::Garbage,
    Cut::Vanished,
];

/// Memory storage whose power is cut at the `cut_at`-th write: that write
/// ends as `mode` says and fails, and every later access fails too (the
/// machine is off until a new engine is made on a copy of `inner`).
struct CutStorage {
    inner: MemoryStorage,
    writes: usize,
    cut_at: usize,
    mode: Cut,
    off: bool,
    /// Objects written before the cut, in order.
    written: Vec<ObjectId>,
}

impl CutStorage {
    fn new(inner: MemoryStorage, cut_at: usize, mode: Cut) -> Self {
        CutStorage {
            inner,
            writes: 0,
            cut_at,
            mode,
            off: false,
            written: Vec::new(),
        }
    }
}

impl SecureStorage for CutStorage {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        if self.off {
            return Err(StorageError::Io);
        }
        self.inner.read(id, buf)
    }

    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
        if self.off {
            return Err(StorageError::Io);
        }
        self.writes += 1;
        if self.writes < self.cut_at {
            self.written.push(id);
            return self.inner.write(id, data);
        }
        self.off = true;
        match self.mode {
            Cut::Lost => {}
            Cut::WrittenThenFailed => self.inner.write(id, data)?,
            Cut::TornPrefix => {
                let mut torn = self
                    .inner
                    .object_mut(id)
                    .map(|o| o.to_vec())
                    .unwrap_or_default();
                let half = data.len() / 2;
                if torn.len() < half {
                    torn.resize(half, 0);
                }
                torn[..half].copy_from_slice(&data[..half]);
                self.inner.write(id, &torn)?;
            }
            Cut::Garbage => {
                let mut g = std::vec![0u8; data.len()];
                TestEntropy(self.writes as u64 * 7919).fill(&mut g).unwrap();
                self.inner.write(id, &g)?;
            }
            Cut::Vanished => self.inner.remove(id),
        }
        Err(StorageError::Io)
    }
}

/// What a fresh engine on some storage answers: the identity and epochs,
/// `None` if not initialised, or the error status.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    pubkey: Vec<u8>,
    epoch: u32,
    min_epoch: u32,
    /// The enrolled recovery key's fingerprint.
    recovery: Option<Vec<u8>>,
    /// Whether unmarked offline blobs are refused.
    unmarked_offline_retired: bool,
}

fn observe<S: SecureStorage>(e: &mut Engine<S, TestEntropy>) -> Result<Option<Seen>, Status> {
    let Response::Status(st) = call(e, Request::Status)? else {
        panic!("status answered with another response")
    };
    if !st.initialised {
        return Ok(None);
    }
    let Response::Pubkey(p) = call(e, Request::Pubkey)? else {
        panic!("pubkey answered with another response")
    };
    let Response::RecoveryStatus(r) = call(e, Request::RecoveryStatus)? else {
        panic!("recovery-status answered with another response")
    };
    let unmarked_offline_retired = e
        .cached
        .as_ref()
        .is_some_and(|l| l.state.unmarked_offline_retired);
    Ok(Some(Seen {
        pubkey: p.sec1.to_vec(),
        epoch: st.epoch,
        min_epoch: st.min_epoch,
        recovery: r.enrolled.map(|f| f.to_vec()),
        unmarked_offline_retired,
    }))
}

fn observe_mem(mem: &MemoryStorage) -> Result<Option<Seen>, Status> {
    observe(&mut Engine::new(mem.clone(), TestEntropy(5)))
}

/// A blob sealed before the operation: its plaintext and epoch (0: an
/// unmarked blob sealed offline).
struct Sealed {
    blob: Vec<u8>,
    plaintext: Vec<u8>,
    epoch: u32,
}

/// The storage before an operation, and blobs sealed on it.
type Setup = fn() -> (MemoryStorage, Vec<Sealed>);

fn engine_on(mem: MemoryStorage, seed: u64) -> Engine<MemoryStorage, TestEntropy> {
    Engine::new(mem, TestEntropy(seed))
}

fn seal_at(e: &mut Engine<MemoryStorage, TestEntropy>, tag: &str) -> Sealed {
    let Ok(Response::Status(st)) = call(e, Request::Status) else {
        panic!("status")
    };
    let plaintext = std::format!("sealed at {tag}").into_bytes();
    Sealed {
        blob: seal(e, "ha/core", &plaintext),
        plaintext,
        epoch: st.epoch,
    }
}

/// An unmarked blob sealed offline to `e`'s device key.
fn offline_unmarked(e: &mut Engine<MemoryStorage, TestEntropy>) -> Sealed {
    let pk = crate::tests::device_pubkey(e);
    let plaintext = b"sealed offline".to_vec();
    Sealed {
        blob: crate::blob::seal_to_device(&pk, "ha/core", &plaintext, &mut TestEntropy(77))
            .unwrap()
            .to_vec(),
        plaintext,
        epoch: 0,
    }
}

fn initialised(rotations: u32) -> (MemoryStorage, Vec<Sealed>) {
    let mut e = engine_on(MemoryStorage::default(), 100);
    call(&mut e, Request::Init).unwrap();
    let mut blobs = std::vec![seal_at(&mut e, "epoch 1"), offline_unmarked(&mut e)];
    for i in 0..rotations {
        call(&mut e, Request::Rotate).unwrap();
        blobs.push(seal_at(&mut e, &std::format!("rotation {i}")));
    }
    (e.storage_mut().clone(), blobs)
}

/// Storage holding only the committed v1 state record (epoch 7, oldest 5),
/// as the release before the slot layout left it, and blobs sealed on it.
fn v1_device() -> (MemoryStorage, Vec<Sealed>) {
    let mut mem = MemoryStorage::default();
    mem.write(ObjectId::LegacyState, &v1_record()).unwrap();
    let mut e = engine_on(mem, 200);
    let blobs = std::vec![seal_at(&mut e, "v1")];
    let mem = e.storage_mut().clone();
    assert!(
        mem.clone().object_mut(ObjectId::SlotA).is_none(),
        "sealing wrote nothing"
    );
    (mem, blobs)
}

fn v1_record() -> Vec<u8> {
    let path = std::format!("{}/tests/golden/state_v1.hex", env!("CARGO_MANIFEST_DIR"));
    h(&std::fs::read_to_string(path).expect("state_v1 fixture"))
}

/// Run `op` on `setup`'s storage with the power cut at write 1, 2, ... in
/// every [`Cut`] mode until it completes without reaching the cut. After
/// each cut a new engine on what the storage holds must answer with the old
/// or the new state, never "not initialised" if the old state was
/// initialised, open every blob sealed before unless its epoch is retired
/// in the state it holds (or the identity was replaced), keep the same
/// state on the boot after, and complete `op` when asked again. Returns the
/// number of writes `op` makes.
fn cut_everywhere(setup: Setup, op: Request) -> usize {
    let (mem, _) = setup();
    let old = observe_mem(&mem).expect("the old state answers");
    // The new state: the same operation, same entropy, no cut.
    let mut reference = engine_on(mem, 1);
    call(&mut reference, op.clone()).expect("the operation succeeds uncut");
    let new = observe(&mut reference).unwrap();
    assert_ne!(old, new, "{op:?} changes the state");
    let mut writes = None;
    for mode in CUTS {
        for n in 1.. {
            let (mem, blobs) = setup();
            let mut e = Engine::new(CutStorage::new(mem, n, mode), TestEntropy(1));
            let r = call(&mut e, op.clone());
            let cs = e.storage_mut();
            if !cs.off {
                assert!(r.is_ok(), "{op:?} uncut: {r:?}");
                assert_eq!(*writes.get_or_insert(n - 1), n - 1, "{op:?} {mode:?}");
                break;
            }
            assert!(
                r.is_err(),
                "{op:?} cut at write {n} ({mode:?}) answered {r:?}"
            );
            let what = std::format!("{op:?} cut at write {n} of {:?} ({mode:?})", cs.written);
            let after = cs.inner.clone();

            let mut boot = engine_on(after, 2);
            let seen = observe(&mut boot).unwrap_or_else(|s| panic!("{what}: {s:?}"));
            assert!(seen == old || seen == new, "{what}: a third state {seen:?}");
            if old.is_some() {
                assert!(seen.is_some(), "{what}: not initialised");
            }
            if let (Some(s), Some(o)) = (&seen, &old) {
                for b in &blobs {
                    let got = unseal(&mut boot, &b.blob);
                    if s.pubkey != o.pubkey {
                        assert_eq!(got, Err(Status::BlobRejected), "{what}: new identity");
                    } else if b.epoch == 0 && s.unmarked_offline_retired {
                        assert_eq!(got, Err(Status::EpochRetired), "{what}: unmarked");
                    } else if b.epoch == 0 {
                        assert_eq!(got.as_deref(), Ok(&b.plaintext[..]), "{what}: blob lost");
                    } else if b.epoch < s.min_epoch {
                        assert_eq!(got, Err(Status::EpochRetired), "{what}");
                    } else {
                        assert_eq!(got.as_deref(), Ok(&b.plaintext[..]), "{what}: blob lost");
                    }
                }
            }
            // The boot after sees the same (repairs were written), and the
            // operation can be completed.
            let mut next = engine_on(boot.storage_mut().clone(), 3);
            assert_eq!(observe(&mut next), Ok(seen.clone()), "{what}: next boot");
            assert!(call(&mut next, op.clone()).is_ok(), "{what}: op again");
            assert!(observe(&mut next).unwrap().is_some());
        }
    }
    writes.unwrap_or(0)
}

#[test]
fn init_survives_a_cut_at_every_write() {
    let n = cut_everywhere(|| (MemoryStorage::default(), Vec::new()), Request::Init);
    assert_eq!(n, 2, "init writes slot A, then the marker");
}

#[test]
fn rotate_survives_a_cut_at_every_write() {
    // The state in slot A (writes B), and in slot B (writes A).
    assert_eq!(cut_everywhere(|| initialised(0), Request::Rotate), 1);
    assert_eq!(cut_everywhere(|| initialised(1), Request::Rotate), 1);
}

#[test]
fn retire_survives_a_cut_at_every_write() {
    let n = cut_everywhere(
        || initialised(2),
        Request::Retire(RetireRequest { below: 3 }),
    );
    assert_eq!(n, 1);
}

#[test]
fn retire_unmarked_survives_a_cut_at_every_write() {
    assert_eq!(
        cut_everywhere(|| initialised(1), Request::RetireUnmarked),
        1
    );
    // A v1 record: the slot, then the marker; format-3 slots: one slot.
    assert_eq!(cut_everywhere(v1_device, Request::RetireUnmarked), 2);
    assert_eq!(cut_everywhere(v3_device, Request::RetireUnmarked), 1);
}

#[test]
fn init_new_identity_survives_a_cut_at_every_write() {
    let n = cut_everywhere(|| initialised(1), Request::InitNewIdentity);
    assert_eq!(n, 3, "the free slot, the other slot, the marker");
    let n = cut_everywhere(
        || (MemoryStorage::default(), Vec::new()),
        Request::InitNewIdentity,
    );
    assert_eq!(n, 3);
}

#[test]
fn migration_from_v1_survives_a_cut_at_every_write() {
    assert_eq!(cut_everywhere(v1_device, Request::Rotate), 2);
    let n = cut_everywhere(v1_device, Request::Retire(RetireRequest { below: 6 }));
    assert_eq!(n, 2, "slot A, then the marker");
    assert_eq!(cut_everywhere(v1_device, Request::InitNewIdentity), 3);
}

/// An escrow request to the recovery key made from `seed`.
fn escrow_to(seed: u8, replace: bool) -> Request {
    let sk = p256::SecretKey::from_slice(&[seed; 32]).unwrap();
    Request::Escrow(hakeys_proto::EscrowRequest {
        recovery_key: crypto::sec1_uncompressed(&sk.public_key())[..]
            .try_into()
            .unwrap(),
        replace,
    })
}

/// An initialised device whose slots are both format 2, as the release
/// before recovery left them (epoch 2 in slot B, seq 2; epoch 1 in A).
fn v2_device() -> (MemoryStorage, Vec<Sealed>) {
    let (mut mem, blobs) = initialised(1);
    for id in [ObjectId::SlotA, ObjectId::SlotB] {
        let SlotRead::Valid { seq, state } = SlotRead::decode(mem.object_mut(id).unwrap()) else {
            panic!("valid")
        };
        mem.write(id, encode_slot_v2(seq, &state).as_ref()).unwrap();
    }
    (mem, blobs)
}

/// An initialised device whose slots are both format 3, as the release
/// before offline generations left them (epoch 2 in slot B, seq 2; epoch 1
/// in A), with the recovery key of seed 7 enrolled in B.
fn v3_device() -> (MemoryStorage, Vec<Sealed>) {
    let (mut mem, blobs) = initialised(1);
    for id in [ObjectId::SlotA, ObjectId::SlotB] {
        let SlotRead::Valid { seq, mut state } = SlotRead::decode(mem.object_mut(id).unwrap())
        else {
            panic!("valid")
        };
        if id == ObjectId::SlotB {
            state.recovery =
                escrow::fingerprint(&p256::SecretKey::from_slice(&[7; 32]).unwrap().public_key());
        }
        mem.write(id, encode_slot_v3(seq, &state).as_ref()).unwrap();
    }
    (mem, blobs)
}

/// A device with the recovery key of seed 7 enrolled.
fn enrolled() -> (MemoryStorage, Vec<Sealed>) {
    let (mem, blobs) = initialised(1);
    let mut e = engine_on(mem, 300);
    call(&mut e, escrow_to(7, false)).unwrap();
    (e.storage_mut().clone(), blobs)
}

#[test]
fn escrow_enrolment_survives_a_cut_at_every_write() {
    assert_eq!(cut_everywhere(|| initialised(1), escrow_to(7, false)), 1);
    // Replacing the enrolled key (the boot phase is open on a fresh engine).
    assert_eq!(cut_everywhere(enrolled, escrow_to(8, true)), 1);
    // A v1 record: the slot, then the marker.
    assert_eq!(cut_everywhere(v1_device, escrow_to(7, false)), 2);
}

#[test]
fn migration_from_slot_format_2_survives_a_cut_at_every_write() {
    assert_eq!(cut_everywhere(v2_device, Request::Rotate), 1);
    assert_eq!(cut_everywhere(v2_device, escrow_to(7, false)), 1);
    let n = cut_everywhere(v2_device, Request::Retire(RetireRequest { below: 2 }));
    assert_eq!(n, 1);
    assert_eq!(cut_everywhere(v2_device, Request::InitNewIdentity), 3);
}

#[test]
fn migration_from_slot_format_3_survives_a_cut_at_every_write() {
    assert_eq!(cut_everywhere(v3_device, Request::Rotate), 1);
    let n = cut_everywhere(v3_device, Request::Retire(RetireRequest { below: 2 }));
    assert_eq!(n, 1);
    assert_eq!(cut_everywhere(v3_device, escrow_to(8, true)), 1);
    assert_eq!(cut_everywhere(v3_device, Request::InitNewIdentity), 3);
}

#[test]
fn format_3_slots_load_and_the_first_commit_writes_format_4() {
    let (mem, blobs) = v3_device();
    let mut e = engine_on(mem, 62);
    let seen = observe(&mut e).unwrap().unwrap();
    assert_eq!(seen.epoch, 2);
    assert!(seen.recovery.is_some() && !seen.unmarked_offline_retired);
    for b in &blobs {
        assert_eq!(unseal(&mut e, &b.blob).as_deref(), Ok(&b.plaintext[..]));
    }
    // Loading wrote nothing; the first commit writes slot A (not holding the
    // state) in format 4, seq 3, keeping the recovery key; B stays format 3.
    assert_eq!(e.storage_mut().object_mut(ObjectId::SlotA).unwrap()[4], 3);
    call(&mut e, Request::RetireUnmarked).unwrap();
    let mut m = e.storage_mut().clone();
    let a = m.object_mut(ObjectId::SlotA).unwrap().to_vec();
    assert_eq!(&a[..5], b"HKSL\x04");
    let SlotRead::Valid { seq, state } = SlotRead::decode(&a) else {
        panic!("valid")
    };
    assert_eq!((seq, state.epoch), (3, 2));
    assert!(state.recovery_key().is_some() && state.unmarked_offline_retired);
    assert_eq!(m.object_mut(ObjectId::SlotB).unwrap()[4], 3);
    let mut e = engine_on(m, 63);
    let after = observe(&mut e).unwrap().unwrap();
    assert_eq!((after.pubkey, after.recovery), (seen.pubkey, seen.recovery));
    assert!(after.unmarked_offline_retired);
}

#[test]
fn format_2_slots_load_and_the_first_commit_writes_format_4() {
    let (mem, blobs) = v2_device();
    let mut e = engine_on(mem, 60);
    let seen = observe(&mut e).unwrap().unwrap();
    assert_eq!((seen.epoch, seen.recovery), (2, None));
    for b in &blobs {
        assert_eq!(unseal(&mut e, &b.blob).as_deref(), Ok(&b.plaintext[..]));
    }
    // Loading wrote nothing; the escrow's enrolment writes slot A (the one
    // not holding the state) in format 4, seq 3; slot B stays format 2.
    assert_eq!(e.storage_mut().object_mut(ObjectId::SlotA).unwrap()[4], 2);
    call(&mut e, escrow_to(7, false)).unwrap();
    let mut m = e.storage_mut().clone();
    let a = m.object_mut(ObjectId::SlotA).unwrap().to_vec();
    assert_eq!(&a[..5], b"HKSL\x04");
    let SlotRead::Valid { seq, state } = SlotRead::decode(&a) else {
        panic!("valid")
    };
    assert_eq!((seq, state.epoch), (3, 2));
    assert!(state.recovery_key().is_some());
    assert_eq!(m.object_mut(ObjectId::SlotB).unwrap()[4], 2);
    let mut e = engine_on(m, 61);
    let after = observe(&mut e).unwrap().unwrap();
    assert_eq!((after.pubkey, after.epoch), (seen.pubkey, 2));
    assert!(after.recovery.is_some());
}

#[test]
fn a_v1_record_loads_then_migrates_and_is_never_written_again() {
    let (mem, blobs) = v1_device();
    let mut e = engine_on(mem, 10);
    assert_eq!(
        observe(&mut e),
        Ok(Some(Seen {
            pubkey: crypto::sec1_uncompressed(
                &p256::SecretKey::from_slice(&h(DEVICE_SK))
                    .unwrap()
                    .public_key()
            )
            .to_vec(),
            epoch: 7,
            min_epoch: 5,
            recovery: None,
            unmarked_offline_retired: false,
        }))
    );
    // Loading writes nothing; the first commit writes slot A (seq 1) and
    // the marker; the v1 record stays as it was.
    assert!(e.storage_mut().object_mut(ObjectId::Marker).is_none());
    call(&mut e, Request::Rotate).unwrap();
    let mem = e.storage_mut().clone();
    let mut m = mem.clone();
    assert_eq!(
        m.object_mut(ObjectId::LegacyState).unwrap(),
        &v1_record()[..]
    );
    let SlotRead::Valid { seq, state } = SlotRead::decode(m.object_mut(ObjectId::SlotA).unwrap())
    else {
        panic!("slot A is valid")
    };
    assert_eq!((seq, state.epoch, state.root_key), (1, 8, ROOT));
    assert!(m.object_mut(ObjectId::SlotB).is_none());
    let fp = fingerprint(&state).unwrap();
    assert!(MarkerRead::decode(m.object_mut(ObjectId::Marker).unwrap()) == MarkerRead::Valid(fp));
    // Later commits alternate slots and never touch the v1 record.
    let mut e = engine_on(mem, 11);
    call(&mut e, Request::Rotate).unwrap();
    call(&mut e, Request::Retire(RetireRequest { below: 8 })).unwrap();
    assert_eq!(
        e.storage_mut().object_mut(ObjectId::LegacyState).unwrap(),
        &v1_record()[..]
    );
    assert_eq!(unseal(&mut e, &blobs[0].blob), Err(Status::EpochRetired));
    let mut e = engine_on(e.storage_mut().clone(), 12);
    assert_eq!(
        observe(&mut e).unwrap().map(|s| (s.epoch, s.min_epoch)),
        Some((9, 8))
    );
}

#[test]
fn lost_slots_with_a_marker_are_corrupt_and_init_refuses() {
    let (mut mem, blobs) = initialised(1);
    mem.remove(ObjectId::SlotA);
    mem.remove(ObjectId::SlotB);
    let before = mem.clone();
    let mut e = engine_on(mem, 20);
    assert_eq!(call(&mut e, Request::Status), Err(Status::StorageCorrupt));
    assert_eq!(call(&mut e, Request::Init), Err(Status::StorageCorrupt));
    assert_eq!(call(&mut e, Request::Rotate), Err(Status::StorageCorrupt));
    assert_eq!(unseal(&mut e, &blobs[0].blob), Err(Status::StorageCorrupt));
    let mut seen = before.clone();
    for id in ObjectId::ALL {
        assert_eq!(
            e.storage_mut().object_mut(id).map(|o| o.to_vec()),
            seen.object_mut(id).map(|o| o.to_vec()),
            "nothing written"
        );
    }
    // Only a new identity leaves this state, and the old blobs stay shut.
    assert_eq!(
        call(&mut e, Request::InitNewIdentity),
        Ok(Response::InitNewIdentity(InitResponse {
            created: true,
            epoch: 1
        }))
    );
    let mut e = engine_on(e.storage_mut().clone(), 21);
    assert_eq!(observe(&mut e).unwrap().unwrap().epoch, 1);
    assert_eq!(unseal(&mut e, &blobs[0].blob), Err(Status::BlobRejected));
    // Both slots and the marker carry the new identity.
    let fp = fingerprint(&e.cached.as_ref().unwrap().state).unwrap();
    let m = e.storage_mut();
    assert!(MarkerRead::decode(m.object_mut(ObjectId::Marker).unwrap()) == MarkerRead::Valid(fp));
    for id in [ObjectId::SlotA, ObjectId::SlotB] {
        let SlotRead::Valid { state, .. } = SlotRead::decode(m.object_mut(id).unwrap()) else {
            panic!("{id:?} valid")
        };
        assert_eq!(fingerprint(&state).unwrap(), fp);
    }
}

#[test]
fn what_each_combination_of_objects_means() {
    let (full, _) = initialised(1);
    let slot = |id| full.clone().object_mut(id).unwrap().to_vec();
    let marker = slot(ObjectId::Marker);
    let build = |objects: &[(ObjectId, Vec<u8>)]| {
        let mut m = MemoryStorage::default();
        for (id, b) in objects {
            m.write(*id, b).unwrap();
        }
        m
    };
    let garbage = std::vec![0xa5u8; SLOT_LEN];
    let mut torn = slot(ObjectId::SlotA);
    torn[60] ^= 1;

    // Nothing, or only invalid slots and no marker: a first init was cut
    // before it completed; not initialised.
    assert_eq!(observe_mem(&build(&[])), Ok(None));
    assert_eq!(
        observe_mem(&build(&[
            (ObjectId::SlotA, torn.clone()),
            (ObjectId::SlotB, garbage.clone())
        ])),
        Ok(None)
    );
    // A marker (valid or not) with no valid slot: lost.
    for m in [marker.clone(), std::vec![1, 2, 3]] {
        assert_eq!(
            observe_mem(&build(&[
                (ObjectId::Marker, m.clone()),
                (ObjectId::SlotA, torn.clone())
            ])),
            Err(Status::StorageCorrupt)
        );
        // Even with a v1 record: a marker means the migration completed.
        assert_eq!(
            observe_mem(&build(&[
                (ObjectId::Marker, m),
                (ObjectId::LegacyState, v1_record())
            ])),
            Err(Status::StorageCorrupt)
        );
    }
    // A v1 record that does not decode: corrupt.
    let mut bad_v1 = v1_record();
    bad_v1[0] = 3;
    assert_eq!(
        observe_mem(&build(&[(ObjectId::LegacyState, bad_v1)])),
        Err(Status::StorageCorrupt)
    );
    // One valid slot suffices; the higher sequence number wins.
    let a = observe_mem(&build(&[(ObjectId::SlotA, slot(ObjectId::SlotA))])).unwrap();
    let b = observe_mem(&build(&[(ObjectId::SlotB, slot(ObjectId::SlotB))])).unwrap();
    assert_eq!(a.as_ref().map(|s| s.epoch), Some(1));
    assert_eq!(b.as_ref().map(|s| s.epoch), Some(2));
    let both = build(&[
        (ObjectId::SlotA, slot(ObjectId::SlotA)),
        (ObjectId::SlotB, slot(ObjectId::SlotB)),
    ]);
    assert_eq!(observe_mem(&both), Ok(b));
    // Two valid slots with the same number and different states: corrupt.
    let st_a = match SlotRead::decode(&slot(ObjectId::SlotA)) {
        SlotRead::Valid { state, .. } => state,
        _ => panic!(),
    };
    let same_seq = encode_slot(2, &st_a).to_vec();
    assert_eq!(
        observe_mem(&build(&[
            (ObjectId::SlotA, same_seq),
            (ObjectId::SlotB, slot(ObjectId::SlotB))
        ])),
        Err(Status::StorageCorrupt)
    );
    // A missing or stale marker next to a valid slot is written on load.
    let mut m = build(&[(ObjectId::SlotB, slot(ObjectId::SlotB))]);
    let mut e = engine_on(m.clone(), 30);
    observe(&mut e).unwrap();
    assert_eq!(
        e.storage_mut().object_mut(ObjectId::Marker).unwrap(),
        &marker[..]
    );
    m.write(ObjectId::Marker, &[0u8; MARKER_LEN]).unwrap();
    let mut e = engine_on(m, 31);
    observe(&mut e).unwrap();
    assert_eq!(
        e.storage_mut().object_mut(ObjectId::Marker).unwrap(),
        &marker[..]
    );
}

/// Memory storage that reports objects as failing its own integrity check
/// until they are written again (the simulator's view of an edited or
/// rolled-back RPMB block).
struct Tampered {
    inner: MemoryStorage,
    bad: Vec<ObjectId>,
}

impl SecureStorage for Tampered {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        if self.bad.contains(&id) {
            return Err(StorageError::Corrupt);
        }
        self.inner.read(id, buf)
    }
    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
        self.bad.retain(|b| *b != id);
        self.inner.write(id, data)
    }
}

#[test]
fn storage_integrity_failures_fail_closed_until_a_new_identity() {
    for bad in [ObjectId::SlotA, ObjectId::SlotB, ObjectId::Marker] {
        let (mem, blobs) = initialised(1);
        let mut e = Engine::new(
            Tampered {
                inner: mem,
                bad: std::vec![bad],
            },
            TestEntropy(40),
        );
        assert_eq!(call(&mut e, Request::Status), Err(Status::StorageCorrupt));
        assert_eq!(call(&mut e, Request::Init), Err(Status::StorageCorrupt));
        assert_eq!(unseal(&mut e, &blobs[1].blob), Err(Status::StorageCorrupt));
        assert!(call(&mut e, Request::InitNewIdentity).is_ok(), "{bad:?}");
        assert!(e.storage_mut().bad.is_empty());
        let mut fresh = Engine::new(e.storage_mut().inner.clone(), TestEntropy(41));
        assert_eq!(observe(&mut fresh).unwrap().unwrap().epoch, 1);
    }
    // An I/O error is not taken as a free slot.
    struct Unreadable(MemoryStorage);
    impl SecureStorage for Unreadable {
        fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
            if id == ObjectId::SlotB {
                return Err(StorageError::Io);
            }
            self.0.read(id, buf)
        }
        fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
            self.0.write(id, data)
        }
    }
    let mut e = Engine::new(Unreadable(initialised(1).0), TestEntropy(42));
    assert_eq!(call(&mut e, Request::Status), Err(Status::StorageFailure));
    assert_eq!(
        call(&mut e, Request::InitNewIdentity),
        Err(Status::StorageFailure)
    );
}

#[test]
fn sequence_numbers_pass_torn_slots() {
    // A torn first write left slot A with an intact header (seq 1): the
    // next init numbers past it.
    let (full, _) = initialised(0);
    let mut torn = full.clone().object_mut(ObjectId::SlotA).unwrap().to_vec();
    torn[SLOT_LEN - 1] ^= 1;
    let mut m = MemoryStorage::default();
    m.write(ObjectId::SlotA, &torn).unwrap();
    let mut e = engine_on(m, 50);
    assert_eq!(observe(&mut e), Ok(None));
    call(&mut e, Request::Init).unwrap();
    let l = e.cached.as_ref().unwrap();
    assert_eq!((l.seq, l.slot), (2, Some(ObjectId::SlotA)));
    // A new identity numbers past every slot, valid or not.
    let (mut m, _) = initialised(3); // seq 4 in slot B
    let mut b = m.object_mut(ObjectId::SlotB).unwrap().to_vec();
    b[5..13].copy_from_slice(&90u64.to_be_bytes());
    m.write(ObjectId::SlotB, &b).unwrap(); // invalid now, seq 90
    let mut e = engine_on(m, 51);
    call(&mut e, Request::InitNewIdentity).unwrap();
    let l = e.cached.as_ref().unwrap();
    // Slot A (seq 3) holds the state: B gets 91, then A 92.
    assert_eq!((l.seq, l.slot), (92, Some(ObjectId::SlotA)));
}

#[test]
fn golden_slot_and_marker() {
    let st = State {
        root_key: ROOT,
        device_key: h(DEVICE_SK).try_into().unwrap(),
        epoch: 7,
        min_epoch: 5,
        recovery: crate::state::NO_RECOVERY_KEY,
        unmarked_offline_retired: false,
    };
    // Format 2, as the release before recovery wrote it: still read, with
    // no recovery key.
    let v2 = encode_slot_v2(0x0102_0304_0506_0708, &st);
    golden("slot_v2", v2.as_ref());
    assert_eq!(&v2[..5], b"HKSL\x02");
    assert_eq!(&v2[13..86], &st.encode()[..]);
    // Format 3, as the release before offline generations wrote it: the
    // same length, the recovery key's fingerprint after the state, a 16-byte
    // checksum.
    let mut enrolled = st.clone();
    enrolled.recovery = [0x5a; 16];
    let v3 = encode_slot_v3(0x0102_0304_0506_0708, &enrolled);
    golden("slot_v3", v3.as_ref());
    assert_eq!(&v3[..5], b"HKSL\x03");
    assert_eq!(&v3[13..86], &st.encode()[..]);
    assert_eq!(&v3[86..102], &[0x5a; 16]);
    // Format 4, what the engine writes: the flags byte (unmarked offline
    // blobs retired) and three zero bytes after the fingerprint, a 12-byte
    // checksum.
    let mut flagged = enrolled.clone();
    flagged.unmarked_offline_retired = true;
    let v4 = encode_slot(0x0102_0304_0506_0708, &flagged);
    golden("slot_v4", v4.as_ref());
    assert_eq!(&v4[..5], b"HKSL\x04");
    assert_eq!(&v4[13..86], &st.encode()[..]);
    assert_eq!(
        &v4[86..106],
        &[[0x5a; 16].as_slice(), &[1, 0, 0, 0]].concat()[..]
    );
    for (slot, recovery, retired) in [
        (v2, None, false),
        (v3, Some([0x5au8; 16]), false),
        (v4.clone(), Some([0x5au8; 16]), true),
    ] {
        let SlotRead::Valid { seq, state } = SlotRead::decode(slot.as_ref()) else {
            panic!("valid")
        };
        assert_eq!((seq, state.encode()), (0x0102_0304_0506_0708, st.encode()));
        assert_eq!(state.recovery_key().copied(), recovery);
        assert_eq!(state.unmarked_offline_retired, retired);
        // Every single-byte change and every truncation is invalid.
        for i in 0..SLOT_LEN {
            let mut t = *slot;
            t[i] ^= 0x01;
            assert!(
                matches!(SlotRead::decode(&t), SlotRead::Invalid { .. }),
                "byte {i}"
            );
        }
        for len in 0..SLOT_LEN {
            assert!(matches!(
                SlotRead::decode(&slot[..len]),
                SlotRead::Invalid { .. }
            ));
        }
    }
    // An unknown flag or a reserved byte set, with a matching checksum:
    // invalid.
    for at in [102, 103, 105] {
        let mut t = *v4;
        t[at] |= 0x02;
        let sum = Sha256::digest(&t[..106]);
        t[106..].copy_from_slice(&sum[..12]);
        assert!(
            matches!(SlotRead::decode(&t), SlotRead::Invalid { .. }),
            "{at}"
        );
    }
    // Another version is invalid, its sequence number not read.
    let mut v5 = encode_slot(9, &st);
    v5[4] = 5;
    assert!(matches!(
        SlotRead::decode(v5.as_ref()),
        SlotRead::Invalid { seq: None }
    ));
    let marker = encode_marker(&st).unwrap();
    golden("marker_v1", &marker);
    assert_eq!(&marker[..5], b"HKIN\x01");
    assert!(MarkerRead::decode(&marker) == MarkerRead::Valid(fingerprint(&st).unwrap()));
    assert!(MarkerRead::decode(&marker[..36]) == MarkerRead::Invalid);
}

#[test]
fn an_independent_implementation_reads_slots_and_writes_markers() {
    use crate::tests::reference;
    let (mut mem, _) = initialised(2);
    for (id, want) in [
        (ObjectId::SlotA, "3 3 1 - -"),
        (ObjectId::SlotB, "2 2 1 - -"),
    ] {
        let rec = hex::encode(mem.object_mut(id).unwrap());
        assert_eq!(reference(&["read-slot", &rec]), want);
    }
    let golden_slot = std::fs::read_to_string(std::format!(
        "{}/tests/golden/slot_v2.hex",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(
        reference(&["read-slot", golden_slot.trim()]),
        std::format!("{} 7 5 - -", 0x0102_0304_0506_0708u64)
    );
    let golden_v3 = std::fs::read_to_string(std::format!(
        "{}/tests/golden/slot_v3.hex",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(
        reference(&["read-slot", golden_v3.trim()]),
        std::format!("{} 7 5 {} -", 0x0102_0304_0506_0708u64, "5a".repeat(16))
    );
    let golden_v4 = std::fs::read_to_string(std::format!(
        "{}/tests/golden/slot_v4.hex",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(
        reference(&["read-slot", golden_v4.trim()]),
        std::format!(
            "{} 7 5 {} unmarked-retired",
            0x0102_0304_0506_0708u64,
            "5a".repeat(16)
        )
    );
    // A slot the engine wrote after enrolling a recovery key.
    let (mut mem, _) = enrolled();
    let fp = hex::encode(escrow::fingerprint(
        &p256::SecretKey::from_slice(&[7; 32]).unwrap().public_key(),
    ));
    let rec = hex::encode(mem.object_mut(ObjectId::SlotA).unwrap());
    assert_eq!(
        reference(&["read-slot", &rec]),
        std::format!("3 2 1 {fp} -")
    );
    let st = State {
        root_key: ROOT,
        device_key: h(DEVICE_SK).try_into().unwrap(),
        epoch: 7,
        min_epoch: 5,
        recovery: crate::state::NO_RECOVERY_KEY,
        unmarked_offline_retired: false,
    };
    assert_eq!(
        reference(&["marker", DEVICE_SK]),
        hex::encode(encode_marker(&st).unwrap())
    );
}
