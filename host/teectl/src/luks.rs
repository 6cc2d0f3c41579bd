//! `teectl luks-finish`: complete an in-place LUKS2 encryption whose data
//! is all encrypted but whose header still records the encryption.
//!
//! `cryptsetup reencrypt --encrypt --reduce-device-size` (which
//! `hakeys-encrypt-data` runs) commits the header after its last block,
//! then wipes the "moved segment" (a plaintext copy of the partition's first
//! megabytes, kept at its end) and only then removes the reencryption
//! keyslot and requirement. A power cut between the two commits leaves a
//! header that cryptsetup 2.7 cannot resume ("Failed to set device segments
//! for next reencryption hotzone": it computes one more hotzone where there
//! is none) and that still carries that plaintext. This module recognises
//! exactly that state and finishes it the way cryptsetup would have: wipe
//! the moved segment with random bytes, clear the reencryption keyslot's
//! area, and commit a header without the reencryption keyslot, its digest,
//! the backup segments and the requirement. Nothing else is ever written.
//!
//! The LUKS2 on-disk format (two header copies, each a 4096-byte binary
//! header with a SHA-256 over the copy, then JSON) is read and written
//! here; `docs/buildroot.md` ("Encrypting the data partition in place")
//! describes when this runs. The key is never needed: no key material is
//! read or written.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{exit, Failure};

/// `teectl luks-finish`
#[derive(Args)]
pub struct LuksFinishArgs {
    /// The LUKS2 device (or image file), not mapped or mounted.
    #[arg(value_name = "DEVICE")]
    device: PathBuf,
    /// Only print what the device needs, one word: `clean` (no encryption
    /// in progress), `resume` (blocks are left: `cryptsetup reencrypt
    /// --resume-only`) or `finish` (all encrypted: `teectl luks-finish`).
    #[arg(long)]
    check: bool,
}

const BIN_SIZE: usize = 4096;
const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// The header sizes the LUKS2 format allows (binary header plus JSON).
const HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
// Field offsets in the binary header.
const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_CSUM_ALG: usize = 72;
const OFF_SALT: usize = 104;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;
const CSUM_LEN: usize = 64;
const SALT_LEN: usize = 64;

/// What a LUKS2 device needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No reencryption recorded.
    Clean,
    /// An encryption (or other reencryption) with blocks left to do:
    /// cryptsetup resumes it.
    Resume,
    /// An encryption whose every block is done, header not finalised.
    Finish,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Clean => "clean",
            State::Resume => "resume",
            State::Finish => "finish",
        }
    }
}

/// A header copy as read and checked (magic, fields, checksum, JSON).
struct HeaderCopy {
    bytes: Vec<u8>,
    seqid: u64,
    json: Value,
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&bytes[..OFF_CSUM]);
    h.update([0u8; CSUM_LEN]);
    h.update(&bytes[OFF_CSUM + CSUM_LEN..]);
    h.finalize().into()
}

/// Reads and checks the copy at `offset`; `None` if there is no valid
/// copy there (wrong magic, fields, checksum or JSON).
fn read_copy(f: &mut File, offset: u64) -> std::io::Result<Option<HeaderCopy>> {
    let mut bin = vec![0u8; BIN_SIZE];
    f.seek(SeekFrom::Start(offset))?;
    if let Err(e) = f.read_exact(&mut bin) {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let magic = if offset == 0 {
        MAGIC_PRIMARY
    } else {
        MAGIC_SECONDARY
    };
    if &bin[..6] != magic || u16::from_be_bytes([bin[OFF_VERSION], bin[OFF_VERSION + 1]]) != 2 {
        return Ok(None);
    }
    let hdr_size = be64(&bin, OFF_HDR_SIZE);
    // The secondary copy sits right after a primary of the same size.
    if !HDR_SIZES.contains(&hdr_size)
        || be64(&bin, OFF_HDR_OFFSET) != offset
        || (offset != 0 && hdr_size != offset)
    {
        return Ok(None);
    }
    let alg = &bin[OFF_CSUM_ALG..OFF_CSUM_ALG + 32];
    if !alg.starts_with(b"sha256\0") {
        return Ok(None);
    }
    let mut bytes = bin;
    bytes.resize(hdr_size as usize, 0);
    if let Err(e) = f.read_exact(&mut bytes[BIN_SIZE..]) {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if checksum(&bytes)[..] != bytes[OFF_CSUM..OFF_CSUM + 32] {
        return Ok(None);
    }
    let area = &bytes[BIN_SIZE..];
    let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let Ok(json) = serde_json::from_slice::<Value>(&area[..end]) else {
        return Ok(None);
    };
    if !json.is_object() {
        return Ok(None);
    }
    Ok(Some(HeaderCopy {
        seqid: be64(&bytes, OFF_SEQID),
        bytes,
        json,
    }))
}

/// Both copies of a device's header (either may be missing or damaged),
/// and the one in force: the valid copy with the higher sequence number.
struct Headers {
    primary: Option<HeaderCopy>,
    secondary: Option<HeaderCopy>,
}

impl Headers {
    fn read(f: &mut File) -> Result<Headers, String> {
        let io = |e: std::io::Error| format!("cannot read the LUKS2 header: {e}");
        let primary = read_copy(f, 0).map_err(io)?;
        let mut secondary = None;
        // The secondary copy follows the primary; with the primary damaged,
        // it is looked for at every offset the format allows.
        let offsets: Vec<u64> = match &primary {
            Some(p) => vec![p.bytes.len() as u64],
            None => HDR_SIZES.to_vec(),
        };
        for off in offsets {
            if let Some(c) = read_copy(f, off).map_err(io)? {
                secondary = Some(c);
                break;
            }
        }
        if primary.is_none() && secondary.is_none() {
            return Err("not a LUKS2 device (no valid header copy)".into());
        }
        Ok(Headers { primary, secondary })
    }

    fn current(&self) -> &HeaderCopy {
        match (&self.primary, &self.secondary) {
            (Some(p), Some(s)) if s.seqid > p.seqid => s,
            (Some(p), _) => p,
            (None, Some(s)) => s,
            (None, None) => unreachable!("read() refuses a device without a copy"),
        }
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A number the LUKS2 JSON stores as a decimal string.
fn num_field(v: &Value, key: &str) -> Option<u64> {
    str_field(v, key).and_then(|s| s.parse().ok())
}

fn flags(seg: &Value) -> Vec<&str> {
    seg.get("flags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn is_backup(seg: &Value) -> bool {
    flags(seg).iter().any(|f| f.starts_with("backup-"))
}

fn segment_with_flag<'a>(
    segments: &'a Map<String, Value>,
    flag: &str,
) -> Option<(&'a str, &'a Value)> {
    segments
        .iter()
        .find(|(_, s)| flags(s).contains(&flag))
        .map(|(k, v)| (k.as_str(), v))
}

fn requirements(json: &Value) -> Vec<&str> {
    json.pointer("/config/requirements/mandatory")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn list_contains(v: &Value, key: &str, id: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(id)))
}

/// What the header `json` says the device needs.
pub fn state(json: &Value) -> State {
    if !requirements(json)
        .iter()
        .any(|r| r.starts_with("online-reencrypt"))
    {
        return State::Clean;
    }
    let Some(keyslots) = json.get("keyslots").and_then(Value::as_object) else {
        return State::Resume;
    };
    let reenc: Vec<&Value> = keyslots
        .values()
        .filter(|k| str_field(k, "type") == Some("reencrypt"))
        .collect();
    if reenc.len() != 1 || str_field(reenc[0], "mode") != Some("encrypt") {
        return State::Resume;
    }
    let Some(segments) = json.get("segments").and_then(Value::as_object) else {
        return State::Resume;
    };
    if segments
        .values()
        .any(|s| flags(s).contains(&"in-reencryption"))
    {
        return State::Resume;
    }
    let active: Vec<(&String, &Value)> = segments.iter().filter(|(_, s)| !is_backup(s)).collect();
    let [(active_id, seg)] = active[..] else {
        return State::Resume;
    };
    let Some((final_id, fin)) = segment_with_flag(segments, "backup-final") else {
        return State::Resume;
    };
    let same = |k: &str| seg.get(k).is_some() && seg.get(k) == fin.get(k);
    if str_field(seg, "type") != Some("crypt")
        || ![
            "type",
            "offset",
            "size",
            "iv_tweak",
            "encryption",
            "sector_size",
        ]
        .iter()
        .all(|k| same(k))
    {
        return State::Resume;
    }
    // The segment is bound to the new key's digest, as the final one is.
    let digests = json.get("digests").and_then(Value::as_object);
    let bound = digests.is_some_and(|d| {
        d.values().any(|dg| {
            list_contains(dg, "segments", active_id) && list_contains(dg, "segments", final_id)
        })
    });
    if bound {
        State::Finish
    } else {
        State::Resume
    }
}

/// The finished header's JSON: `json` without the reencryption keyslot,
/// the backup segments, digests left without a keyslot, and the
/// reencryption requirement. Also returns the reencryption keyslot's area
/// and the moved segment (offset, size) for the wipes.
struct Finished {
    json: Value,
    reenc_area: Option<(u64, u64)>,
    moved: Option<(u64, u64)>,
}

fn finished_json(json: &Value) -> Result<Finished, String> {
    let bad = |what: &str| format!("unexpected LUKS2 header: {what}");
    let mut out = json.clone();
    let root = out.as_object_mut().ok_or_else(|| bad("not an object"))?;

    let keyslots = root
        .get_mut("keyslots")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no keyslots"))?;
    let reenc_ids: Vec<String> = keyslots
        .iter()
        .filter(|(_, k)| str_field(k, "type") == Some("reencrypt"))
        .map(|(id, _)| id.clone())
        .collect();
    let mut reenc_area = None;
    for id in &reenc_ids {
        let k = keyslots.remove(id).expect("listed");
        let area = k
            .get("area")
            .ok_or_else(|| bad("reencrypt keyslot without area"))?;
        let (o, s) = (num_field(area, "offset"), num_field(area, "size"));
        reenc_area = Some((
            o.ok_or_else(|| bad("reencrypt keyslot area offset"))?,
            s.ok_or_else(|| bad("reencrypt keyslot area size"))?,
        ));
    }

    let segments = root
        .get_mut("segments")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no segments"))?;
    let moved = match segment_with_flag(segments, "backup-moved-segment") {
        Some((_, m)) => Some((
            num_field(m, "offset").ok_or_else(|| bad("moved segment offset"))?,
            num_field(m, "size").ok_or_else(|| bad("moved segment size"))?,
        )),
        None => None,
    };
    let removed_segments: Vec<String> = segments
        .iter()
        .filter(|(_, s)| is_backup(s))
        .map(|(id, _)| id.clone())
        .collect();
    for id in &removed_segments {
        segments.remove(id);
    }
    if segments.is_empty() {
        return Err(bad("no data segment"));
    }

    let digests = root
        .get_mut("digests")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no digests"))?;
    for dg in digests.values_mut() {
        for (key, gone) in [("keyslots", &reenc_ids), ("segments", &removed_segments)] {
            if let Some(list) = dg.get_mut(key).and_then(Value::as_array_mut) {
                list.retain(|x| !x.as_str().is_some_and(|s| gone.iter().any(|g| g == s)));
            }
        }
    }
    // A digest bound to nothing any more goes (cryptsetup erases those
    // with neither keyslots nor segments).
    let empty = |dg: &Value, key: &str| {
        dg.get(key)
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
    };
    digests.retain(|_, dg| !(empty(dg, "keyslots") && empty(dg, "segments")));

    let config = root
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no config"))?;
    if let Some(req) = config
        .get_mut("requirements")
        .and_then(Value::as_object_mut)
    {
        if let Some(m) = req.get_mut("mandatory").and_then(Value::as_array_mut) {
            m.retain(|r| {
                !r.as_str()
                    .is_some_and(|s| s.starts_with("online-reencrypt"))
            });
            if m.is_empty() {
                req.remove("mandatory");
            }
        }
        if req.is_empty() {
            config.remove("requirements");
        }
    }
    // keyslots_size stays: luksFormat set it for this data offset (capped
    // and aligned as cryptsetup requires), and the end of an encryption
    // that shifted the data backward leaves it as it is.
    Ok(Finished {
        json: out,
        reenc_area,
        moved,
    })
}

/// The rules of cryptsetup's header validation that the finished header
/// could break, checked before anything is written: a header cryptsetup
/// rejects would leave a partition that nothing opens.
fn validate(json: &Value, hdr_size: u64) -> Result<(), String> {
    let bad = |what: String| Err(format!("the finished header would be invalid: {what}"));
    let obj = |k: &str| json.get(k).and_then(Value::as_object);
    let (Some(keyslots), Some(segments), Some(digests), Some(config)) = (
        obj("keyslots"),
        obj("segments"),
        obj("digests"),
        json.get("config"),
    ) else {
        return bad("a section is missing".into());
    };
    if num_field(config, "json_size") != Some(hdr_size - BIN_SIZE as u64) {
        return bad("json_size does not match the header size".into());
    }
    let Some(ks_size) = num_field(config, "keyslots_size") else {
        return bad("no keyslots_size".into());
    };
    if ks_size % 4096 != 0 || ks_size > 128 << 20 {
        return bad(format!("keyslots_size {ks_size}"));
    }
    let (ks_start, ks_end) = (2 * hdr_size, 2 * hdr_size + ks_size);
    if !requirements(json).is_empty() {
        return bad("requirements remain".into());
    }
    // Segments numbered 0..n, none in the header or keyslots area, each
    // crypt segment bound to exactly one digest.
    for id in segments.keys() {
        if id
            .parse::<usize>()
            .ok()
            .filter(|&n| n < segments.len())
            .is_none()
        {
            return bad(format!("segment ids are not 0..{} ({id})", segments.len()));
        }
    }
    for (id, seg) in segments {
        if is_backup(seg) {
            return bad(format!("backup segment {id} remains"));
        }
        if num_field(seg, "offset").is_none_or(|off| off < ks_end) {
            return bad(format!("segment {id} overlaps the header or keyslots"));
        }
        let bound = digests
            .values()
            .filter(|d| list_contains(d, "segments", id))
            .count();
        if str_field(seg, "type") == Some("crypt") && bound != 1 {
            return bad(format!("crypt segment {id} is bound to {bound} digests"));
        }
    }
    // Keyslots: luks2 only, inside the keyslots area, each bound to
    // exactly one digest.
    for (id, k) in keyslots {
        if str_field(k, "type") != Some("luks2") {
            return bad(format!("keyslot {id} is not a luks2 keyslot"));
        }
        let area = k.get("area");
        let off = area.and_then(|a| num_field(a, "offset"));
        let end = off.and_then(|o| o.checked_add(area.and_then(|a| num_field(a, "size"))?));
        if !matches!((off, end), (Some(o), Some(e)) if o >= ks_start && e <= ks_end) {
            return bad(format!("keyslot {id}'s area is outside the keyslots area"));
        }
        let bound = digests
            .values()
            .filter(|d| list_contains(d, "keyslots", id))
            .count();
        if bound != 1 {
            return bad(format!("keyslot {id} is bound to {bound} digests"));
        }
    }
    // Digests name only what exists.
    for (id, d) in digests {
        for (key, known) in [("keyslots", keyslots), ("segments", segments)] {
            let refs = d.get(key).and_then(Value::as_array);
            let missing = refs.is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_none_or(|x| !known.contains_key(x)))
            });
            if missing {
                return bad(format!("digest {id} names a missing {key} entry"));
            }
        }
    }
    Ok(())
}

/// A header copy's bytes for `json` and `seqid`, from `template` (a copy
/// of either kind) placed at `offset`.
fn build_copy(template: &[u8], offset: u64, seqid: u64, json: &Value) -> Result<Vec<u8>, String> {
    let mut bytes = template.to_vec();
    let text =
        serde_json::to_vec(json).map_err(|e| format!("cannot write the header's JSON: {e}"))?;
    if text.len() >= bytes.len() - BIN_SIZE {
        return Err("the finished header's JSON does not fit its area".into());
    }
    let magic = if offset == 0 {
        MAGIC_PRIMARY
    } else {
        MAGIC_SECONDARY
    };
    bytes[..6].copy_from_slice(magic);
    bytes[OFF_SEQID..OFF_SEQID + 8].copy_from_slice(&seqid.to_be_bytes());
    bytes[OFF_HDR_OFFSET..OFF_HDR_OFFSET + 8].copy_from_slice(&offset.to_be_bytes());
    bytes[BIN_SIZE..].fill(0);
    bytes[BIN_SIZE..BIN_SIZE + text.len()].copy_from_slice(&text);
    bytes[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
    let sum = checksum(&bytes);
    bytes[OFF_CSUM..OFF_CSUM + 32].copy_from_slice(&sum);
    Ok(bytes)
}

fn write_at(f: &mut File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Overwrites `len` bytes at `offset` with random bytes (or zeros).
fn wipe(f: &mut File, offset: u64, len: u64, random: bool) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    f.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        if random {
            getrandom::fill(&mut buf[..n]).map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

fn device_size(f: &mut File) -> std::io::Result<u64> {
    f.seek(SeekFrom::End(0))
}

/// Opens `device` for writing, exclusively where it is a block device
/// (refused while mounted or mapped).
fn open(device: &Path, write: bool) -> Result<File, Failure> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(write);
    if write {
        o.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
    }
    o.open(device).map_err(|e| {
        let code = if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
            exit::REFUSED
        } else {
            exit::USAGE
        };
        let why = if code == exit::REFUSED {
            "it is in use (mounted or mapped)".to_string()
        } else {
            e.to_string()
        };
        Failure(code, format!("cannot open {}: {why}", device.display()))
    })
}

/// Finishes the encryption of `device` if its header is in the
/// [`State::Finish`] state; returns the state found.
pub fn finish(device: &Path) -> Result<State, Failure> {
    let name = device.display();
    let mut f = open(device, true)?;
    let headers =
        Headers::read(&mut f).map_err(|e| Failure(exit::USAGE, format!("{name}: {e}")))?;
    let cur = headers.current();
    let found = state(&cur.json);
    match found {
        State::Clean => return Ok(found),
        State::Resume => {
            return Err(Failure(
                exit::REFUSED,
                format!(
                    "the encryption of {name} has blocks left to do: resume it (cryptsetup reencrypt --resume-only); nothing was changed"
                ),
            ))
        }
        State::Finish => {}
    }
    let hdr_size = cur.bytes.len() as u64;
    let done =
        finished_json(&cur.json).map_err(|e| Failure(exit::USAGE, format!("{name}: {e}")))?;
    validate(&done.json, hdr_size)
        .map_err(|e| Failure(exit::USAGE, format!("{name}: {e}; nothing was changed")))?;
    let size = device_size(&mut f).map_err(|e| Failure(exit::USAGE, format!("{name}: {e}")))?;
    let keyslots_end = 2 * hdr_size + num_field(&done.json["config"], "keyslots_size").unwrap_or(0);
    let data_offset = done.json["segments"]
        .as_object()
        .and_then(|s| s.values().filter_map(|v| num_field(v, "offset")).min())
        .unwrap_or(0);
    let io = |what: &str, e: std::io::Error| {
        Failure(exit::OUTPUT, format!("{name}: cannot {what}: {e}"))
    };

    // 1. The plaintext copy of the partition's start: cryptsetup wipes it
    //    with random bytes once the last block is done. It lies in the data
    //    area, past the file system.
    if let Some((off, len)) = done.moved {
        if off < data_offset || off.checked_add(len).is_none_or(|end| end > size) {
            return Err(Failure(
                exit::USAGE,
                format!("{name}: the moved segment ({off}+{len}) is outside the data area; nothing was changed"),
            ));
        }
        wipe(&mut f, off, len, true).map_err(|e| io("wipe the moved segment", e))?;
    }
    // 2. The reencryption keyslot's area (resilience data), in the
    //    keyslots area.
    if let Some((off, len)) = done.reenc_area {
        if off < 2 * hdr_size || off.checked_add(len).is_none_or(|end| end > keyslots_end) {
            return Err(Failure(
                exit::USAGE,
                format!("{name}: the reencryption keyslot's area is outside the keyslots area"),
            ));
        }
        wipe(&mut f, off, len, false).map_err(|e| io("clear the reencryption keyslot", e))?;
    }
    // 3. The header, both copies with the next sequence number: the primary
    //    first. A cut before the primary is whole leaves the old header in
    //    force (the secondary), and this runs again; after it, the primary
    //    is in force and cryptsetup brings the secondary up to date.
    let seqid = [&headers.primary, &headers.secondary]
        .iter()
        .filter_map(|c| c.as_ref().map(|c| c.seqid))
        .max()
        .unwrap_or(0)
        + 1;
    let template_for = |c: &Option<HeaderCopy>| c.as_ref().map(|c| c.bytes.clone());
    let mut primary = template_for(&headers.primary).unwrap_or_else(|| cur.bytes.clone());
    let mut secondary = template_for(&headers.secondary).unwrap_or_else(|| cur.bytes.clone());
    // A copy rebuilt from the other gets its own salt.
    for (rebuilt, bytes) in [
        (headers.primary.is_none(), &mut primary),
        (headers.secondary.is_none(), &mut secondary),
    ] {
        if bytes.len() as u64 != hdr_size {
            bytes.resize(hdr_size as usize, 0);
        }
        if rebuilt {
            getrandom::fill(&mut bytes[OFF_SALT..OFF_SALT + SALT_LEN])
                .map_err(|e| Failure(exit::INTERNAL, format!("no random bytes: {e}")))?;
        }
    }
    let primary =
        build_copy(&primary, 0, seqid, &done.json).map_err(|e| Failure(exit::USAGE, e))?;
    let secondary =
        build_copy(&secondary, hdr_size, seqid, &done.json).map_err(|e| Failure(exit::USAGE, e))?;
    // The old copies, put back if what was written does not read back.
    let mut old = vec![0u8; 2 * hdr_size as usize];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut old))
        .map_err(|e| io("read the header", e))?;
    let written = write_at(&mut f, 0, &primary)
        .and_then(|_| write_at(&mut f, hdr_size, &secondary))
        .map_err(|e| format!("cannot write the header: {e}"));

    // 4. Read back: both copies as written, valid, and clean.
    let verified = written.and_then(|_| {
        let mut back = vec![0u8; old.len()];
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_exact(&mut back))
            .map_err(|e| format!("cannot read the header back: {e}"))?;
        let check = Headers::read(&mut f)?;
        let clean = [&check.primary, &check.secondary].iter().all(|c| {
            c.as_ref()
                .is_some_and(|c| c.seqid == seqid && state(&c.json) == State::Clean)
        });
        if back[..primary.len()] == primary[..] && back[primary.len()..] == secondary[..] && clean {
            Ok(())
        } else {
            Err("the header read back is not the one written".into())
        }
    });
    if let Err(e) = verified {
        let restored = write_at(&mut f, 0, &old).is_ok();
        return Err(Failure(
            exit::OUTPUT,
            format!(
                "{name}: {e}; {}",
                if restored {
                    "the previous header was written back (run again)"
                } else {
                    "the previous header could not be written back either"
                }
            ),
        ));
    }
    Ok(found)
}

/// What `device` needs, read only.
pub fn check(device: &Path) -> Result<State, Failure> {
    let mut f = open(device, false)?;
    let headers = Headers::read(&mut f)
        .map_err(|e| Failure(exit::USAGE, format!("{}: {e}", device.display())))?;
    Ok(state(&headers.current().json))
}

pub fn run(args: &LuksFinishArgs) -> Result<(), Failure> {
    if args.check {
        let s = check(&args.device)?;
        return crate::write_stdout(format!("{}\n", s.word()).as_bytes());
    }
    match finish(&args.device)? {
        State::Clean => eprintln!(
            "teectl: {}: no encryption in progress; nothing to finish",
            args.device.display()
        ),
        _ => eprintln!(
            "teectl: {}: every block was encrypted; wiped the plaintext copy of its start and removed the finished encryption's record from the header",
            args.device.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
