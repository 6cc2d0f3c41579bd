//! The state layout that survives a cut at any write: two slots written
//! alternately and an initialisation marker (format, rules and the
//! atomicity argument in `engine/SPEC.md`, "State layout").
//!
//! A slot holds the v1 state record with a sequence number, the enrolled
//! recovery key's fingerprint, the offline flags (format 4; formats 3 and 2
//! had fewer fields and are still read) and a truncated SHA-256 checksum;
//! the valid slot with the highest sequence number is the state.
//! A commit writes the slot that does not hold the current state, so a cut
//! leaves the current state untouched and the other slot old, new or
//! invalid. The marker records that the device was initialised (and with
//! which device key), so that lost slots read as corrupt storage, never as
//! a device that was never set up.

use p256::SecretKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::state::{State, NO_RECOVERY_KEY, STATE_LEN};
use crate::{crypto, ObjectId, SecureStorage, StorageError, MAX_OBJECT_LEN};
use hakeys_proto::RECOVERY_FINGERPRINT_LEN;

/// Magic of a slot record.
pub const SLOT_MAGIC: [u8; 4] = *b"HKSL";
/// Version byte of the slot record this engine writes (the state record
/// inside stays version 1).
pub const SLOT_VERSION: u8 = 4;
/// Version byte of the slot record of the release with recovery escrow and
/// before offline generations (no flags; read, never written).
pub const SLOT_VERSION_3: u8 = 3;
/// Version byte of the slot record of the release before recovery (no
/// recovery key; read, never written).
pub const SLOT_VERSION_2: u8 = 2;
/// Length of the checksummed part of a format-2 slot: magic, version,
/// sequence number, state.
const SLOT_V2_BODY_LEN: usize = 4 + 1 + 8 + STATE_LEN;
/// Length of the checksummed part of a format-3 slot: as format 2, then the
/// recovery key's fingerprint.
const SLOT_V3_BODY_LEN: usize = SLOT_V2_BODY_LEN + RECOVERY_FINGERPRINT_LEN;
/// Length of a format-3 slot's checksum.
const SLOT_V3_SUM_LEN: usize = 16;
/// Length of the checksummed part of a format-4 slot: as format 3, then the
/// flags byte and three reserved (zero) bytes.
const SLOT_BODY_LEN: usize = SLOT_V3_BODY_LEN + 4;
/// Length of a format-4 slot's checksum (SHA-256 truncated; it detects torn
/// writes and damage, authenticity is the storage's).
const SLOT_SUM_LEN: usize = 12;
/// Encoded length of a slot record, formats 2, 3 and 4 alike: an object on
/// OP-TEE is rewritten only in place at its length (`engine/SPEC.md` §1.12).
pub const SLOT_LEN: usize = SLOT_BODY_LEN + SLOT_SUM_LEN;
const _: () = assert!(SLOT_LEN == SLOT_V2_BODY_LEN + 32);
const _: () = assert!(SLOT_LEN == SLOT_V3_BODY_LEN + SLOT_V3_SUM_LEN);
/// Format-4 flag: unmarked blobs sealed offline (generation 0) are refused.
const FLAG_UNMARKED_OFFLINE_RETIRED: u8 = 0x01;
/// Magic of the initialisation marker.
pub const MARKER_MAGIC: [u8; 4] = *b"HKIN";
/// Version byte of the marker.
pub const MARKER_VERSION: u8 = 1;
/// Encoded length of the marker.
pub const MARKER_LEN: usize = 4 + 1 + 32;

/// SHA-256 of the device public key (uncompressed SEC1): which identity a
/// marker records.
pub(crate) type Fingerprint = [u8; 32];

/// Write `parts` one after the other into `out` (which they fill exactly).
fn concat(out: &mut [u8], parts: &[&[u8]]) {
    let mut at = 0;
    for p in parts {
        if let Some(dst) = out.get_mut(at..at + p.len()) {
            dst.copy_from_slice(p);
        }
        at += p.len();
    }
}

/// A slot record, format 4: `HKSL || 4 || u64be(seq) || state(73) ||
/// recovery fingerprint(16) || flags(1) || 00 00 00 || SHA-256(all before)[0..12]`.
pub(crate) fn encode_slot(seq: u64, st: &State) -> Zeroizing<[u8; SLOT_LEN]> {
    let mut out = Zeroizing::new([0u8; SLOT_LEN]);
    let rec = Zeroizing::new(st.encode());
    let flags = if st.unmarked_offline_retired {
        FLAG_UNMARKED_OFFLINE_RETIRED
    } else {
        0
    };
    let (body, sum) = out.split_at_mut(SLOT_BODY_LEN);
    concat(
        body,
        &[
            &SLOT_MAGIC,
            &[SLOT_VERSION],
            &seq.to_be_bytes(),
            rec.as_ref(),
            &st.recovery,
            &[flags, 0, 0, 0],
        ],
    );
    if let Some(head) = Sha256::digest(&*body).get(..SLOT_SUM_LEN) {
        sum.copy_from_slice(head);
    }
    out
}

/// A slot record, format 3 (`HKSL || 3 || u64be(seq) || state(73) ||
/// recovery fingerprint(16) || SHA-256(all before)[0..16]`), as the release
/// before offline generations wrote it. The engine never writes it; tests
/// build old devices with it.
#[cfg(test)]
pub(crate) fn encode_slot_v3(seq: u64, st: &State) -> Zeroizing<[u8; SLOT_LEN]> {
    let mut out = Zeroizing::new([0u8; SLOT_LEN]);
    let rec = Zeroizing::new(st.encode());
    let (body, sum) = out.split_at_mut(SLOT_V3_BODY_LEN);
    concat(
        body,
        &[
            &SLOT_MAGIC,
            &[SLOT_VERSION_3],
            &seq.to_be_bytes(),
            rec.as_ref(),
            &st.recovery,
        ],
    );
    sum.copy_from_slice(&Sha256::digest(&*body)[..SLOT_V3_SUM_LEN]);
    out
}

/// A slot record, format 2 (`HKSL || 2 || u64be(seq) || state(73) ||
/// SHA-256(all before)`), as the release before recovery wrote it. The
/// engine never writes it; tests build old devices with it.
#[cfg(test)]
pub(crate) fn encode_slot_v2(seq: u64, st: &State) -> Zeroizing<[u8; SLOT_LEN]> {
    let mut out = Zeroizing::new([0u8; SLOT_LEN]);
    let rec = Zeroizing::new(st.encode());
    let (body, sum) = out.split_at_mut(SLOT_V2_BODY_LEN);
    concat(
        body,
        &[
            &SLOT_MAGIC,
            &[SLOT_VERSION_2],
            &seq.to_be_bytes(),
            rec.as_ref(),
        ],
    );
    sum.copy_from_slice(&Sha256::digest(&*body));
    out
}

/// What one slot object holds.
pub(crate) enum SlotRead {
    /// The object does not exist.
    Missing,
    /// It exists but is not a valid slot record (a torn write, damage, or
    /// a read the storage itself refused). `seq` is its sequence number if
    /// its magic and version are intact.
    Invalid { seq: Option<u64> },
    /// A valid record.
    Valid { seq: u64, state: State },
}

impl SlotRead {
    /// Decode the bytes of an existing slot object (format 4, format 3
    /// with no flags set, or format 2 with no recovery key either).
    pub(crate) fn decode(bytes: &[u8]) -> SlotRead {
        let header = match bytes.split_first_chunk::<13>() {
            Some(([m0, m1, m2, m3, v, s @ ..], _)) if [*m0, *m1, *m2, *m3] == SLOT_MAGIC => {
                matches!(*v, SLOT_VERSION | SLOT_VERSION_3 | SLOT_VERSION_2)
                    .then(|| (*v, u64::from_be_bytes(*s)))
            }
            _ => None,
        };
        let seq = header.map(|(_, seq)| seq);
        let Some((version, seq_ok)) = header else {
            return SlotRead::Invalid { seq };
        };
        let Ok(rec) = <&[u8; SLOT_LEN]>::try_from(bytes) else {
            return SlotRead::Invalid { seq };
        };
        let body_len = match version {
            SLOT_VERSION => SLOT_BODY_LEN,
            SLOT_VERSION_3 => SLOT_V3_BODY_LEN,
            _ => SLOT_V2_BODY_LEN,
        };
        let (body, sum) = rec.split_at(body_len);
        if Sha256::digest(body).get(..sum.len()) != Some(sum) {
            return SlotRead::Invalid { seq };
        }
        let mut recovery = NO_RECOVERY_KEY;
        if version != SLOT_VERSION_2 {
            match body.get(SLOT_V2_BODY_LEN..SLOT_V3_BODY_LEN) {
                Some(f) => recovery.copy_from_slice(f),
                None => return SlotRead::Invalid { seq },
            }
        }
        let mut unmarked_offline_retired = false;
        if version == SLOT_VERSION {
            match body.get(SLOT_V3_BODY_LEN..SLOT_BODY_LEN) {
                // Unknown flags and reserved bytes must be zero.
                Some([flags, 0, 0, 0]) if flags & !FLAG_UNMARKED_OFFLINE_RETIRED == 0 => {
                    unmarked_offline_retired = flags & FLAG_UNMARKED_OFFLINE_RETIRED != 0;
                }
                _ => return SlotRead::Invalid { seq },
            }
        }
        match body.get(13..13 + STATE_LEN).map(State::decode) {
            Some(Ok(mut state)) => {
                state.recovery = recovery;
                state.unmarked_offline_retired = unmarked_offline_retired;
                SlotRead::Valid { seq: seq_ok, state }
            }
            _ => SlotRead::Invalid { seq },
        }
    }

    /// The sequence number, valid or not, if it can be read.
    fn seq(&self) -> Option<u64> {
        match self {
            SlotRead::Missing => None,
            SlotRead::Invalid { seq } => *seq,
            SlotRead::Valid { seq, .. } => Some(*seq),
        }
    }
}

/// What the marker object holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkerRead {
    Missing,
    /// Exists but does not decode (a torn write or damage): still proof
    /// that an init got as far as writing it.
    Invalid,
    Valid(Fingerprint),
}

impl MarkerRead {
    fn decode(bytes: &[u8]) -> MarkerRead {
        match <&[u8; MARKER_LEN]>::try_from(bytes) {
            Ok([m0, m1, m2, m3, v, fp @ ..])
                if [*m0, *m1, *m2, *m3] == MARKER_MAGIC && *v == MARKER_VERSION =>
            {
                MarkerRead::Valid(*fp)
            }
            _ => MarkerRead::Invalid,
        }
    }
}

/// The marker for `st`'s identity: `HKIN || 1 || SHA-256(device public key)`.
#[cfg(test)]
pub(crate) fn encode_marker(st: &State) -> Result<[u8; MARKER_LEN], StorageError> {
    Ok(encode_marker_of(&device_public(st)?))
}

/// The marker for the identity with device public key `public`.
fn encode_marker_of(public: &[u8; 65]) -> [u8; MARKER_LEN] {
    let mut out = [0u8; MARKER_LEN];
    concat(
        &mut out,
        &[&MARKER_MAGIC, &[MARKER_VERSION], &fingerprint_of(public)],
    );
    out
}

/// The device public key of `st` (uncompressed SEC1): one scalar
/// multiplication, done once per loaded or new state ([`Loaded`]).
pub(crate) fn device_public(st: &State) -> Result<[u8; 65], StorageError> {
    // `State::decode` and generation both guarantee a valid scalar.
    let sk = SecretKey::from_slice(&st.device_key).map_err(|_| StorageError::Corrupt)?;
    Ok(crypto::sec1_uncompressed(&sk.public_key()))
}

/// The identity fingerprint of a device public key.
fn fingerprint_of(public: &[u8; 65]) -> Fingerprint {
    let mut fp = [0u8; 32];
    fp.copy_from_slice(&Sha256::digest(public));
    fp
}

/// The identity fingerprint of `st`.
#[cfg(test)]
pub(crate) fn fingerprint(st: &State) -> Result<Fingerprint, StorageError> {
    Ok(fingerprint_of(&device_public(st)?))
}

/// Read object `id` and hand its bytes (or `None`) to `f`; the buffer is
/// wiped afterwards.
fn read_object<S: SecureStorage, T>(
    s: &mut S,
    id: ObjectId,
    f: impl FnOnce(Option<&[u8]>) -> T,
) -> Result<T, StorageError> {
    let mut buf = Zeroizing::new([0u8; MAX_OBJECT_LEN]);
    match s.read(id, buf.as_mut())? {
        None => Ok(f(None)),
        Some(n) => Ok(f(Some(buf.get(..n).ok_or(StorageError::Corrupt)?))),
    }
}

fn read_slot<S: SecureStorage>(s: &mut S, id: ObjectId) -> Result<SlotRead, StorageError> {
    read_object(s, id, |b| b.map_or(SlotRead::Missing, SlotRead::decode))
}

/// The marker and both slots, as read at one moment.
pub(crate) struct Scan {
    pub(crate) marker: MarkerRead,
    a: SlotRead,
    b: SlotRead,
}

impl Scan {
    /// Read the marker and both slots. Any storage error fails the scan: the
    /// storage contract says a cut leaves bytes that fail the engine's own
    /// checks, never an error of the storage's own integrity check, so such
    /// an error is damage or tampering and the engine fails closed.
    pub(crate) fn read<S: SecureStorage>(s: &mut S) -> Result<Scan, StorageError> {
        Ok(Scan {
            marker: read_object(s, ObjectId::Marker, |b| {
                b.map_or(MarkerRead::Missing, MarkerRead::decode)
            })?,
            a: read_slot(s, ObjectId::SlotA)?,
            b: read_slot(s, ObjectId::SlotB)?,
        })
    }

    /// As [`Scan::read`], but an object the storage reports as corrupt
    /// counts as an invalid object (`init-new-identity` overwrites them).
    /// I/O errors still fail: they may pass, and a slot that could not be
    /// read at all might hold a higher sequence number than the one chosen.
    pub(crate) fn read_tolerant<S: SecureStorage>(s: &mut S) -> Result<Scan, StorageError> {
        let marker = match read_object(s, ObjectId::Marker, |b| {
            b.map_or(MarkerRead::Missing, MarkerRead::decode)
        }) {
            Err(StorageError::Corrupt) => MarkerRead::Invalid,
            other => other?,
        };
        let mut slot = |id| match read_slot(s, id) {
            Err(StorageError::Corrupt) => Ok(SlotRead::Invalid { seq: None }),
            other => other,
        };
        let a = slot(ObjectId::SlotA)?;
        let b = slot(ObjectId::SlotB)?;
        Ok(Scan { marker, a, b })
    }

    /// The highest sequence number in either slot, valid or not (0 if none).
    pub(crate) fn max_seq(&self) -> u64 {
        self.a.seq().max(self.b.seq()).unwrap_or(0)
    }

    /// The valid slot with the highest sequence number. Two valid slots with
    /// the same number and different contents never come out of the write
    /// protocol: `Corrupt`.
    pub(crate) fn best(&self) -> Result<Option<(ObjectId, u64, &State)>, StorageError> {
        match (&self.a, &self.b) {
            (SlotRead::Valid { seq: sa, state: a }, SlotRead::Valid { seq: sb, state: b }) => {
                if sa > sb {
                    Ok(Some((ObjectId::SlotA, *sa, a)))
                } else if sb > sa {
                    Ok(Some((ObjectId::SlotB, *sb, b)))
                } else if a.same_as(b) {
                    Ok(Some((ObjectId::SlotA, *sa, a)))
                } else {
                    Err(StorageError::Corrupt)
                }
            }
            (SlotRead::Valid { seq, state }, _) => Ok(Some((ObjectId::SlotA, *seq, state))),
            (_, SlotRead::Valid { seq, state }) => Ok(Some((ObjectId::SlotB, *seq, state))),
            _ => Ok(None),
        }
    }
}

/// The engine's state as loaded, with what the next commit needs.
#[cfg_attr(any(test, feature = "fuzzing"), derive(Clone))]
pub(crate) struct Loaded {
    pub(crate) state: State,
    /// Its sequence number (0 for a v1 record).
    pub(crate) seq: u64,
    /// The slot holding it; `None` for the v1 record in `LegacyState`.
    pub(crate) slot: Option<ObjectId>,
    /// Whether the marker exists and records this state's identity.
    pub(crate) marker_ok: bool,
    /// The state's device public key (uncompressed SEC1), computed once:
    /// `pubkey`, evidence, offline blobs, escrows and the marker use it.
    pub(crate) device_public: [u8; 65],
}

/// Load the state by the rules of `engine/SPEC.md`: the newest valid slot;
/// else a v1 record (only if no marker exists); else not initialised if
/// nothing at all shows that an init completed, and `Corrupt` if something
/// does.
pub(crate) fn load<S: SecureStorage>(s: &mut S) -> Result<Option<Loaded>, StorageError> {
    let scan = Scan::read(s)?;
    if let Some((slot, seq, state)) = scan.best()? {
        let device_public = device_public(state)?;
        let marker_ok = scan.marker == MarkerRead::Valid(fingerprint_of(&device_public));
        return Ok(Some(Loaded {
            state: state.clone(),
            seq,
            slot: Some(slot),
            marker_ok,
            device_public,
        }));
    }
    if scan.marker != MarkerRead::Missing {
        // An init (or a migration) completed, and no valid slot is left:
        // lost, never "not initialised", and never an older v1 record.
        return Err(StorageError::Corrupt);
    }
    match read_object(s, ObjectId::LegacyState, |b| b.map(State::decode))? {
        None => Ok(None),
        Some(Ok(state)) => Ok(Some(Loaded {
            device_public: device_public(&state)?,
            state,
            seq: 0,
            slot: None,
            marker_ok: false,
        })),
        Some(Err(_)) => Err(StorageError::Corrupt),
    }
}

/// The slot a commit writes when the state is in `current`.
pub(crate) fn other(current: Option<ObjectId>) -> ObjectId {
    match current {
        Some(ObjectId::SlotA) => ObjectId::SlotB,
        _ => ObjectId::SlotA,
    }
}

pub(crate) fn write_slot<S: SecureStorage>(
    s: &mut S,
    id: ObjectId,
    seq: u64,
    st: &State,
) -> Result<(), StorageError> {
    s.write(id, encode_slot(seq, st).as_ref())
}

/// Write the marker of the identity with device public key `public`.
pub(crate) fn write_marker<S: SecureStorage>(
    s: &mut S,
    public: &[u8; 65],
) -> Result<(), StorageError> {
    s.write(ObjectId::Marker, &encode_marker_of(public))
}

#[cfg(test)]
mod tests;
