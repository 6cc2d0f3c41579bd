//! Who is calling: the identity layer between the socket and the decision.
//!
//! For each connection, without trusting anything the caller says:
//!
//! 1. [`peer`]: the kernel's uid, gid and pid of the process that connected,
//!    pinned by its pidfd (`SO_PEERPIDFD`), and its cgroup
//!    (`/proc/<pid>/cgroup`), read while the process provably still lives;
//! 2. [`cgroup`]: the Docker container id that cgroup names, if any;
//! 3. [`cache`] over [`docker`]: the container's name, from Docker's
//!    read-only inspect call by id (cached by id, bounded, expiring).
//!
//! The result is a [`Peer`](crate::decision::Peer): plain data that the
//! pure decision (`decision.rs`) matches against the policy. Processes
//! outside containers are identified by uid and gid alone, as before.

pub mod cache;
pub mod cgroup;
pub mod docker;
pub mod peer;

use std::sync::Arc;
use std::time::Instant;

use crate::decision::{Origin, Peer};
use cache::{NameCache, Pending, TooManyPending};
use cgroup::{ContainerId, Place};
use docker::LookupError;
use peer::KernelPeer;

/// Where a connection stands after the kernel's part (fast, no I/O beyond
/// `/proc`).
pub enum Stage {
    /// Fully identified.
    Known(Peer),
    /// In a container whose name must be asked of the runtime first.
    NeedsName(KernelPeer, ContainerId),
}

/// The kernel's part, with the cache's answer if it has one.
pub fn first_stage(k: KernelPeer, names: &NameCache, now: Instant) -> (Stage, Option<String>) {
    match &k.place {
        Ok(Place::Host) => (Stage::Known(peer(&k, Origin::Host)), None),
        Err(why) => {
            let why = why.clone();
            (Stage::Known(peer(&k, Origin::Unknown)), Some(why))
        }
        Ok(Place::Container(id)) => match names.cached(id, now) {
            Some(r) => {
                let id = id.clone();
                let (p, why) = named(&k, id, r);
                (Stage::Known(p), why)
            }
            None => {
                let id = id.clone();
                (Stage::NeedsName(k, id), None)
            }
        },
    }
}

/// The runtime's part (may take up to the lookup timeout): the complete
/// peer, and why its container could not be named, if it could not.
pub fn second_stage(
    k: &KernelPeer,
    id: ContainerId,
    names: &NameCache,
    now: Instant,
) -> (Peer, Option<String>) {
    let r = names.resolve(&id, now);
    named(k, id, r)
}

/// A place among the connections waiting for a name (bounded per container
/// and in total).
pub fn reserve(names: &Arc<NameCache>, id: &ContainerId) -> Result<Pending, TooManyPending> {
    names.reserve(id)
}

fn named(
    k: &KernelPeer,
    id: ContainerId,
    r: Result<String, LookupError>,
) -> (Peer, Option<String>) {
    match r {
        Ok(name) => (
            peer(
                k,
                Origin::Container {
                    id,
                    name: Some(name),
                },
            ),
            None,
        ),
        Err(e) => {
            let why = format!("cannot name container {}: {e}", id.short());
            (peer(k, Origin::Container { id, name: None }), Some(why))
        }
    }
}

fn peer(k: &KernelPeer, origin: Origin) -> Peer {
    Peer {
        uid: k.uid,
        gid: k.gid,
        pid: k.pid,
        origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::docker::{ContainerInfo, Runtime};
    use crate::policy::Policy;
    use std::time::Duration;
    use teed_protocol::Op;

    struct NoRuntime;
    impl Runtime for NoRuntime {
        fn inspect(&self, _: &ContainerId) -> Result<ContainerInfo, LookupError> {
            panic!("a host process must never be looked up in the runtime")
        }
    }

    #[test]
    fn a_process_on_a_system_without_cgroup_mounts_is_matched_by_uid() {
        // The QEMU guest never mounts cgroupfs: /proc/<pid>/cgroup reads
        // `0::/`, or nothing when the kernel has no hierarchy at all. Such
        // a caller is in no container: a host process, which uid/gid rules
        // match (never "unidentified", which no rule matches).
        let names = NameCache::new(Arc::new(NoRuntime), Duration::from_millis(10));
        let policy =
            Policy::parse(include_str!("../fixtures/policy-by-uid.toml")).expect("fixture parses");
        for text in ["0::/\n", ""] {
            let k = KernelPeer {
                uid: 8123,
                gid: 8123,
                pid: 42,
                place: cgroup::parse(text),
                method: peer::Method::PeerPidfd,
            };
            let (stage, why) = first_stage(k, &names, Instant::now());
            assert_eq!(why, None, "{text:?}");
            let Stage::Known(p) = stage else {
                panic!("{text:?}: a host process needs no container name")
            };
            assert_eq!(p.origin, Origin::Host, "{text:?}");
            assert!(
                policy.allows(p.who(), Op::Unseal, Some("ha/core")),
                "{text:?}"
            );
            assert!(!policy.allows(p.who(), Op::Unseal, Some("boot/luks-data")));
        }
    }
}
