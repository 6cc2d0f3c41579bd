//! Container names by container id, cached.
//!
//! - **Keyed by id.** Docker's ids are 256 random bits and never reused, so
//!   an entry can only ever answer for the container it was made for: a
//!   container recreated under the same name (an update) has a new id and
//!   is looked up afresh, and a removed container's entry can never answer
//!   for another one. (Whether the *caller* still lives in that container is
//!   checked for every connection, from its pidfd and cgroup, before the
//!   cache is asked.)
//! - **Expiring.** Names are kept [`NAME_TTL`]: a container renamed in place
//!   (`docker rename`, which keeps the id; the Supervisor does this once
//!   when it migrates `addon_<slug>` to `app_<slug>`) is seen under its new
//!   name within that time. "No such container" is kept [`NOT_FOUND_TTL`],
//!   a failure to ask [`FAILURE_TTL`], so that a flood of connections makes
//!   at most one lookup per id per that time.
//! - **One lookup per id at a time.** Concurrent connections from one
//!   container wait for the same answer.
//! - **Bounded.** At most [`MAX_ENTRIES`] entries (expired ones go first,
//!   then the oldest); at most [`MAX_PENDING`] connections waiting for a
//!   lookup, [`MAX_PENDING_PER_ID`] of them per container, so one container
//!   cannot hold up the others' first lookups.
//!
//! Every method takes the current time, so the logic is tested without
//! sleeping, with a fake runtime.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cgroup::ContainerId;
use super::docker::{LookupError, Runtime};

/// How long a container's name is trusted without asking again.
pub const NAME_TTL: Duration = Duration::from_secs(30);
/// How long "no such container" is remembered.
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(2);
/// How long a failure to ask the runtime is remembered.
pub const FAILURE_TTL: Duration = Duration::from_secs(1);
/// The most containers remembered.
pub const MAX_ENTRIES: usize = 1024;
/// The most connections waiting for a lookup at once, all containers.
pub const MAX_PENDING: usize = 16;
/// The most connections waiting for a lookup at once, one container.
pub const MAX_PENDING_PER_ID: usize = 2;

#[derive(Clone)]
struct Entry {
    result: Result<String, LookupError>,
    at: Instant,
}

impl Entry {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = match &self.result {
            Ok(_) => NAME_TTL,
            Err(LookupError::NotFound) => NOT_FOUND_TTL,
            Err(LookupError::Failed(_)) => FAILURE_TTL,
        };
        now.saturating_duration_since(self.at) < ttl && now >= self.at
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<ContainerId, Entry>,
    in_flight: HashSet<ContainerId>,
    pending: HashMap<ContainerId, usize>,
    pending_total: usize,
}

/// The cache, shared by every connection.
pub struct NameCache {
    runtime: Arc<dyn Runtime>,
    inner: Mutex<Inner>,
    done: Condvar,
    /// How long a connection waits for another's lookup of the same id.
    wait: Duration,
}

/// Why a lookup was not even tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyPending;

/// A place among the connections waiting for a lookup; given back on drop.
pub struct Pending {
    cache: Arc<NameCache>,
    id: ContainerId,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut g = self.cache.lock();
        if let Some(n) = g.pending.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.pending.remove(&self.id);
            }
        }
        g.pending_total = g.pending_total.saturating_sub(1);
    }
}

impl NameCache {
    /// A cache over `runtime`, whose lookups take at most `lookup_timeout`.
    pub fn new(runtime: Arc<dyn Runtime>, lookup_timeout: Duration) -> NameCache {
        NameCache {
            runtime,
            inner: Mutex::new(Inner::default()),
            done: Condvar::new(),
            wait: lookup_timeout + Duration::from_millis(500),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The remembered answer for `id`, if still fresh: no lookup.
    pub fn cached(&self, id: &ContainerId, now: Instant) -> Option<Result<String, LookupError>> {
        self.lock()
            .entries
            .get(id)
            .filter(|e| e.fresh(now))
            .map(|e| e.result.clone())
    }

    /// Take a place among the connections waiting for a lookup of `id`.
    pub fn reserve(self: &Arc<Self>, id: &ContainerId) -> Result<Pending, TooManyPending> {
        let mut g = self.lock();
        let mine = g.pending.get(id).copied().unwrap_or(0);
        if g.pending_total >= MAX_PENDING || mine >= MAX_PENDING_PER_ID {
            return Err(TooManyPending);
        }
        g.pending.insert(id.clone(), mine + 1);
        g.pending_total += 1;
        Ok(Pending {
            cache: Arc::clone(self),
            id: id.clone(),
        })
    }

    /// The name of container `id`: remembered, or asked of the runtime (one
    /// lookup per id at a time; others wait for it). `now` is the time the
    /// answer is remembered from.
    pub fn resolve(&self, id: &ContainerId, now: Instant) -> Result<String, LookupError> {
        let mut g = self.lock();
        let give_up = Instant::now() + self.wait;
        while g.in_flight.contains(id) {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LookupError::Failed(
                    "the container runtime did not answer in time".into(),
                ));
            }
            g = self
                .done
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            if let Some(e) = g.entries.get(id) {
                // Whatever the lookup we waited for found, even just now.
                if !g.in_flight.contains(id) {
                    return e.result.clone();
                }
            }
        }
        if let Some(e) = g.entries.get(id).filter(|e| e.fresh(now)) {
            return e.result.clone();
        }
        g.in_flight.insert(id.clone());
        drop(g);
        let result = self.runtime.inspect(id).map(|c| c.name);
        let mut g = self.lock();
        g.in_flight.remove(id);
        if !g.entries.contains_key(id) && g.entries.len() >= MAX_ENTRIES {
            Self::evict(&mut g, now);
        }
        g.entries.insert(
            id.clone(),
            Entry {
                result: result.clone(),
                at: now,
            },
        );
        drop(g);
        self.done.notify_all();
        result
    }

    /// Make room: expired entries first, else the oldest one.
    fn evict(g: &mut Inner, now: Instant) {
        g.entries.retain(|_, e| e.fresh(now));
        if g.entries.len() >= MAX_ENTRIES {
            if let Some(oldest) = g
                .entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(id, _)| id.clone())
            {
                g.entries.remove(&oldest);
            }
        }
    }

    /// Containers remembered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::docker::ContainerInfo;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A runtime whose containers are a map the test edits; counts calls.
    #[derive(Default)]
    struct FakeRuntime {
        names: Mutex<HashMap<ContainerId, Result<String, LookupError>>>,
        calls: AtomicUsize,
        delay: Mutex<Duration>,
    }

    impl FakeRuntime {
        fn set(&self, id: &ContainerId, r: Result<&str, LookupError>) {
            self.names
                .lock()
                .unwrap()
                .insert(id.clone(), r.map(str::to_owned));
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Runtime for FakeRuntime {
        fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, LookupError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let d = *self.delay.lock().unwrap();
            std::thread::sleep(d);
            let r = self
                .names
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .unwrap_or(Err(LookupError::NotFound));
            r.map(|name| ContainerInfo {
                id: id.clone(),
                name,
            })
        }
    }

    fn id(n: u8) -> ContainerId {
        ContainerId::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }

    fn setup() -> (Arc<FakeRuntime>, Arc<NameCache>) {
        let rt = Arc::new(FakeRuntime::default());
        let cache = Arc::new(NameCache::new(rt.clone(), Duration::from_secs(2)));
        (rt, cache)
    }

    #[test]
    fn names_are_looked_up_once_then_remembered_for_a_while() {
        let (rt, c) = setup();
        let t = Instant::now();
        rt.set(&id(1), Ok("homeassistant"));
        assert_eq!(c.cached(&id(1), t), None);
        assert_eq!(c.resolve(&id(1), t), Ok("homeassistant".into()));
        assert_eq!(
            c.resolve(&id(1), t + Duration::from_secs(1)),
            Ok("homeassistant".into())
        );
        assert_eq!(c.cached(&id(1), t), Some(Ok("homeassistant".into())));
        assert_eq!(rt.calls(), 1);
        // Renamed in place (same id): seen once the entry expires.
        rt.set(&id(1), Ok("app_x"));
        let later = t + NAME_TTL;
        assert_eq!(c.cached(&id(1), later), None);
        assert_eq!(c.resolve(&id(1), later), Ok("app_x".into()));
        assert_eq!(rt.calls(), 2);
    }

    #[test]
    fn a_recreated_container_is_looked_up_by_its_new_id() {
        let (rt, c) = setup();
        let t = Instant::now();
        // homeassistant, id 1; then removed and recreated: id 2, same name;
        // and id 1's name now "belongs" to nobody.
        rt.set(&id(1), Ok("homeassistant"));
        assert_eq!(c.resolve(&id(1), t), Ok("homeassistant".into()));
        rt.names.lock().unwrap().remove(&id(1));
        rt.set(&id(2), Ok("homeassistant"));
        assert_eq!(c.resolve(&id(2), t), Ok("homeassistant".into()));
        // A third container (another add-on) never gets id 1's entry.
        rt.set(&id(3), Ok("addon_evil"));
        assert_eq!(c.resolve(&id(3), t), Ok("addon_evil".into()));
        assert_eq!(rt.calls(), 3);
        // Once expired, id 1 is asked again, and is gone.
        assert_eq!(c.resolve(&id(1), t + NAME_TTL), Err(LookupError::NotFound));
    }

    #[test]
    fn not_found_and_failures_are_remembered_briefly() {
        let (rt, c) = setup();
        let t = Instant::now();
        assert_eq!(c.resolve(&id(4), t), Err(LookupError::NotFound));
        assert_eq!(c.resolve(&id(4), t), Err(LookupError::NotFound));
        assert_eq!(rt.calls(), 1);
        rt.set(&id(4), Ok("late"));
        assert_eq!(c.resolve(&id(4), t + NOT_FOUND_TTL), Ok("late".into()));
        let down = LookupError::Failed("docker is down".into());
        rt.set(&id(5), Err(down.clone()));
        assert_eq!(c.resolve(&id(5), t), Err(down.clone()));
        assert_eq!(c.resolve(&id(5), t), Err(down));
        assert_eq!(rt.calls(), 3);
        rt.set(&id(5), Ok("back"));
        assert_eq!(c.resolve(&id(5), t + FAILURE_TTL), Ok("back".into()));
        // A clock that went backwards does not make an entry fresh.
        assert_eq!(c.cached(&id(5), t), None);
    }

    #[test]
    fn concurrent_connections_of_one_container_share_one_lookup() {
        let (rt, c) = setup();
        rt.set(&id(6), Ok("addon_core_mosquitto"));
        *rt.delay.lock().unwrap() = Duration::from_millis(200);
        let t = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || c.resolve(&id(6), t))
            })
            .collect();
        for h in threads {
            assert_eq!(h.join().unwrap(), Ok("addon_core_mosquitto".into()));
        }
        assert_eq!(rt.calls(), 1);
    }

    #[test]
    fn waiting_is_bounded_per_container_and_in_total() {
        let (_rt, c) = setup();
        let a = c.reserve(&id(7)).unwrap();
        let b = c.reserve(&id(7)).unwrap();
        assert!(c.reserve(&id(7)).is_err(), "one container: at most 2");
        let others: Vec<Pending> = (10..(10 + MAX_PENDING as u8 - 2))
            .map(|n| c.reserve(&id(n)).unwrap())
            .collect();
        assert!(
            c.reserve(&id(8)).is_err(),
            "in total: at most {MAX_PENDING}"
        );
        drop(a);
        assert!(c.reserve(&id(8)).is_ok());
        drop((b, others));
        assert!(c.reserve(&id(7)).is_ok());
    }

    #[test]
    fn the_cache_is_bounded() {
        let (rt, c) = setup();
        let t = Instant::now();
        for n in 0..=255u8 {
            rt.set(&id(n), Ok("x"));
        }
        // 256 distinct ids x several rounds, all fresh: the table never
        // exceeds its bound (ids are reused here only to stay in u8).
        for round in 0..(MAX_ENTRIES / 256 + 2) {
            for n in 0..=255u8 {
                let mut raw = format!("{n:02x}").repeat(31);
                raw.push_str(&format!("{:02x}", round));
                let i = ContainerId::parse(&raw).unwrap();
                rt.set(&i, Ok("y"));
                let _ = c.resolve(&i, t + Duration::from_millis(round as u64));
                assert!(c.len() <= MAX_ENTRIES);
            }
        }
        assert_eq!(c.len(), MAX_ENTRIES);
    }
}
