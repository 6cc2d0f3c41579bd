//! Per-caller limits: open connections, a token bucket for requests, and
//! failed unseals (exponential back-off after a few free failures, then a
//! lockout). A caller is a container (by name) or, outside containers, a
//! uid ([`CallerKey`]). Callers that no policy rule names share a small pool
//! of connections, so they can never take the slots of those it serves.
//! One table for all, bounded in size; every method takes the current time
//! so the logic is tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::identity::cgroup::ContainerId;
use crate::policy::Limits;

/// The most callers tracked at once. Only root can create uids and
/// containers, so the table fills only on a system with that many distinct
/// callers; then idle, clean entries are forgotten first.
pub const MAX_TRACKED_CALLERS: usize = 4096;

/// Whose limits a request counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// A process outside containers (or one teed could not place): its uid.
    Uid(u32),
    /// A process in the container with this name (a recreated container
    /// keeps its limits, and its back-off).
    Container(String),
    /// A process in a container whose name could not be read.
    UnnamedContainer(ContainerId),
}

/// Why a caller was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The daemon holds its maximum of connections.
    Busy,
    /// This caller holds its maximum of connections.
    TooManyConnections,
    /// Over the request rate, or backing off or locked out after failed
    /// unseals: retry after this long.
    RateLimited(Duration),
}

#[derive(Debug)]
struct CallerState {
    tokens: f64,
    refilled: Instant,
    connections: usize,
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    seen: Instant,
    /// Rate-limited requests not written to the audit log since the last
    /// one that was (so a flood cannot flood the log).
    suppressed: u64,
    last_limited_log: Option<Instant>,
}

impl CallerState {
    fn new(now: Instant, limits: &Limits) -> CallerState {
        CallerState {
            tokens: f64::from(limits.burst),
            refilled: now,
            connections: 0,
            failures: 0,
            last_failure: None,
            blocked_until: None,
            seen: now,
            suppressed: 0,
            last_limited_log: None,
        }
    }

    /// Nothing would be lost by forgetting this caller.
    fn is_clean(&self, now: Instant) -> bool {
        self.connections == 0 && self.failures == 0 && self.blocked_until.is_none_or(|b| b <= now)
    }
}

/// The per-caller table.
#[derive(Debug)]
pub struct Callers {
    map: HashMap<CallerKey, CallerState>,
    cap: usize,
    connections: usize,
    /// Of which, from callers no rule names.
    unnamed: usize,
}

impl Default for Callers {
    fn default() -> Self {
        Callers::new(MAX_TRACKED_CALLERS)
    }
}

impl Callers {
    /// A table of at most `cap` callers (at least the most connections).
    pub fn new(cap: usize) -> Callers {
        Callers {
            map: HashMap::new(),
            cap: cap.max(crate::policy::MAX_CONNECTIONS_CAP + 1),
            connections: 0,
            unnamed: 0,
        }
    }

    /// Callers tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No caller tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Connections open, all callers.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Connections open from callers no rule names.
    pub fn unnamed_connections(&self) -> usize {
        self.unnamed
    }

    fn entry(&mut self, key: &CallerKey, now: Instant, limits: &Limits) -> &mut CallerState {
        if !self.map.contains_key(key) && self.map.len() >= self.cap {
            self.evict(now);
        }
        let e = self
            .map
            .entry(key.clone())
            .or_insert_with(|| CallerState::new(now, limits));
        e.seen = now;
        e
    }

    /// Forget the least recently seen caller, a clean one if there is one.
    /// Callers with open connections are never forgotten.
    fn evict(&mut self, now: Instant) {
        let victim = self
            .map
            .iter()
            .filter(|(_, s)| s.is_clean(now))
            .min_by_key(|(_, s)| s.seen)
            .or_else(|| {
                self.map
                    .iter()
                    .filter(|(_, s)| s.connections == 0)
                    .min_by_key(|(_, s)| s.seen)
            })
            .map(|(key, _)| key.clone());
        if let Some(key) = victim {
            self.map.remove(&key);
        }
    }

    /// Admit a new connection from `key` (`named`: some policy rule names
    /// this caller), or say why not. Callers no rule names all share
    /// `max_unnamed_connections` slots; the others are theirs.
    pub fn open_connection(
        &mut self,
        key: &CallerKey,
        named: bool,
        now: Instant,
        limits: &Limits,
    ) -> Result<(), Refusal> {
        if self.connections >= limits.max_connections
            || (!named && self.unnamed >= limits.max_unnamed_connections)
        {
            return Err(Refusal::Busy);
        }
        let e = self.entry(key, now, limits);
        if e.connections >= limits.max_connections_per_caller {
            return Err(Refusal::TooManyConnections);
        }
        e.connections += 1;
        self.connections += 1;
        if !named {
            self.unnamed += 1;
        }
        Ok(())
    }

    /// A connection from `key` closed (`named` as when it was opened).
    pub fn close_connection(&mut self, key: &CallerKey, named: bool, now: Instant) {
        if let Some(e) = self.map.get_mut(key) {
            e.connections = e.connections.saturating_sub(1);
            e.seen = now;
        }
        self.connections = self.connections.saturating_sub(1);
        if !named {
            self.unnamed = self.unnamed.saturating_sub(1);
        }
    }

    /// Take one request token for `key`, or say how long until one is there.
    pub fn take_token(
        &mut self,
        key: &CallerKey,
        now: Instant,
        limits: &Limits,
    ) -> Result<(), Refusal> {
        let e = self.entry(key, now, limits);
        let burst = f64::from(limits.burst);
        let elapsed = now.saturating_duration_since(e.refilled).as_secs_f64();
        e.tokens = (e.tokens + elapsed * limits.requests_per_second).min(burst);
        e.refilled = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - e.tokens) / limits.requests_per_second;
            Err(Refusal::RateLimited(Duration::from_secs_f64(
                wait.clamp(0.001, 3600.0),
            )))
        }
    }

    /// May `key` try an unseal now (not backing off, not locked out)?
    pub fn unseal_allowed(
        &mut self,
        key: &CallerKey,
        now: Instant,
        limits: &Limits,
    ) -> Result<(), Refusal> {
        let e = self.entry(key, now, limits);
        match e.blocked_until {
            Some(until) if until > now => Err(Refusal::RateLimited(until - now)),
            _ => Ok(()),
        }
    }

    /// Record the outcome of an unseal that was the caller's doing.
    pub fn record_unseal(&mut self, key: &CallerKey, now: Instant, failed: bool, limits: &Limits) {
        let e = self.entry(key, now, limits);
        if !failed {
            // Success does not forgive earlier failures (a caller with one
            // good blob could otherwise interleave it to keep guessing).
            return;
        }
        if e.last_failure
            .is_some_and(|t| now.saturating_duration_since(t) > limits.failure_window)
        {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = Some(now);
        if e.failures >= limits.failed_unseals_lockout {
            e.blocked_until = Some(now + limits.lockout);
            // After the lockout, the next failure backs off again at once.
            e.failures = limits.failed_unseals_free;
        } else if e.failures > limits.failed_unseals_free {
            let doublings = (e.failures - limits.failed_unseals_free - 1).min(20);
            let backoff = limits
                .failed_unseal_backoff
                .saturating_mul(1u32 << doublings)
                .min(limits.lockout);
            e.blocked_until = Some(now + backoff);
        }
    }

    /// Should this rate-limited request be written to the audit log? Yes for
    /// the first in each second per caller, with the count of those skipped
    /// since; the rest are only counted.
    pub fn log_limited(&mut self, key: &CallerKey, now: Instant, limits: &Limits) -> Option<u64> {
        let e = self.entry(key, now, limits);
        match e.last_limited_log {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                e.suppressed = e.suppressed.saturating_add(1);
                None
            }
            _ => {
                e.last_limited_log = Some(now);
                Some(std::mem::take(&mut e.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(uid: u32) -> CallerKey {
        CallerKey::Uid(uid)
    }

    fn limits() -> Limits {
        Limits {
            requests_per_second: 10.0,
            burst: 5,
            max_connections: 4,
            max_connections_per_caller: 2,
            max_unnamed_connections: 1,
            failed_unseals_free: 2,
            failed_unseal_backoff: Duration::from_millis(100),
            failed_unseals_lockout: 6,
            lockout: Duration::from_secs(60),
            failure_window: Duration::from_secs(600),
            ..Limits::default()
        }
    }

    /// `key` takes the whole burst (5) at `t`; the next request is rate
    /// limited.
    fn drain_burst(c: &mut Callers, key: &CallerKey, t: Instant, l: &Limits) {
        for _ in 0..5 {
            assert_eq!(c.take_token(key, t, l), Ok(()));
        }
        assert!(matches!(
            c.take_token(key, t, l),
            Err(Refusal::RateLimited(_))
        ));
    }

    #[test]
    fn connections_are_capped_per_uid_and_in_total() {
        let l = limits();
        let now = Instant::now();
        let mut c = Callers::default();
        assert_eq!(c.open_connection(&k(1), true, now, &l), Ok(()));
        assert_eq!(c.open_connection(&k(1), true, now, &l), Ok(()));
        assert_eq!(
            c.open_connection(&k(1), true, now, &l),
            Err(Refusal::TooManyConnections)
        );
        assert_eq!(c.open_connection(&k(2), true, now, &l), Ok(()));
        assert_eq!(c.open_connection(&k(3), true, now, &l), Ok(()));
        assert_eq!(c.open_connection(&k(4), true, now, &l), Err(Refusal::Busy));
        c.close_connection(&k(1), true, now);
        assert_eq!(c.connections(), 3);
        assert_eq!(c.open_connection(&k(4), true, now, &l), Ok(()));
    }

    #[test]
    fn callers_no_rule_names_share_a_small_pool() {
        let l = limits(); // 4 in all, 2 per caller, 1 for the unnamed
        let now = Instant::now();
        let mut c = Callers::default();
        let stranger = CallerKey::Container("quirky_turing".into());
        let ha = CallerKey::Container("homeassistant".into());
        assert_eq!(c.open_connection(&stranger, false, now, &l), Ok(()));
        // Another unnamed caller (a host uid, a nameless container) finds
        // the pool full.
        for other in [
            k(4242),
            CallerKey::UnnamedContainer(ContainerId::parse(&"ab".repeat(32)).unwrap()),
            stranger.clone(),
        ] {
            assert_eq!(
                c.open_connection(&other, false, now, &l),
                Err(Refusal::Busy)
            );
        }
        assert_eq!(c.unnamed_connections(), 1);
        // The callers the policy names still get every other slot.
        assert_eq!(c.open_connection(&ha, true, now, &l), Ok(()));
        assert_eq!(c.open_connection(&ha, true, now, &l), Ok(()));
        assert_eq!(c.open_connection(&k(0), true, now, &l), Ok(()));
        assert_eq!(c.open_connection(&k(1), true, now, &l), Err(Refusal::Busy));
        // A freed unnamed slot goes to the next unnamed caller ...
        c.close_connection(&stranger, false, now);
        assert_eq!(c.unnamed_connections(), 0);
        assert_eq!(c.open_connection(&k(4242), false, now, &l), Ok(()));
        assert_eq!(c.unnamed_connections(), 1);
        // ... but a slot a named caller frees is never the unnamed's.
        c.close_connection(&ha, true, now);
        assert_eq!(
            c.open_connection(&k(4343), false, now, &l),
            Err(Refusal::Busy)
        );
        assert_eq!(c.open_connection(&k(1), true, now, &l), Ok(()));
        // No slot at all for the unnamed, if so configured.
        let none = Limits {
            max_unnamed_connections: 0,
            ..l
        };
        let mut c = Callers::default();
        assert_eq!(
            c.open_connection(&stranger, false, now, &none),
            Err(Refusal::Busy)
        );
        assert_eq!(c.open_connection(&ha, true, now, &none), Ok(()));
    }

    #[test]
    fn containers_and_uids_are_separate_callers() {
        let l = limits();
        let t = Instant::now();
        let mut c = Callers::default();
        // Every container runs as uid 0 on HA OS: each still has its own
        // bucket, and none shares root's.
        drain_burst(&mut c, &CallerKey::Container("addon_flood".into()), t, &l);
        assert_eq!(
            c.take_token(&CallerKey::Container("homeassistant".into()), t, &l),
            Ok(())
        );
        assert_eq!(c.take_token(&k(0), t, &l), Ok(()));
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let l = limits();
        let t0 = Instant::now();
        let mut c = Callers::default();
        drain_burst(&mut c, &k(7), t0, &l);
        // Another caller is unaffected.
        assert_eq!(c.take_token(&k(8), t0, &l), Ok(()));
        // 10/s: one token after 100 ms.
        let t1 = t0 + Duration::from_millis(101);
        assert_eq!(c.take_token(&k(7), t1, &l), Ok(()));
        assert!(c.take_token(&k(7), t1, &l).is_err());
        let t2 = t1 + Duration::from_secs(60);
        drain_burst(&mut c, &k(7), t2, &l);
    }

    #[test]
    fn failed_unseals_back_off_then_lock_out() {
        let l = limits();
        let t = Instant::now();
        let mut c = Callers::default();
        // Two free failures.
        for _ in 0..2 {
            c.record_unseal(&k(1), t, true, &l);
            assert_eq!(c.unseal_allowed(&k(1), t, &l), Ok(()));
        }
        // Third: 100 ms, fourth: 200 ms, fifth: 400 ms.
        let mut now = t;
        for backoff in [100, 200, 400] {
            c.record_unseal(&k(1), now, true, &l);
            assert_eq!(
                c.unseal_allowed(&k(1), now, &l),
                Err(Refusal::RateLimited(Duration::from_millis(backoff)))
            );
            now += Duration::from_millis(backoff);
            assert_eq!(c.unseal_allowed(&k(1), now, &l), Ok(()));
        }
        // Success does not reset; the sixth failure locks out for 60 s.
        c.record_unseal(&k(1), now, false, &l);
        c.record_unseal(&k(1), now, true, &l);
        assert_eq!(
            c.unseal_allowed(&k(1), now, &l),
            Err(Refusal::RateLimited(Duration::from_secs(60)))
        );
        assert_eq!(
            c.unseal_allowed(&k(2), now, &l),
            Ok(()),
            "others unaffected"
        );
        now += Duration::from_secs(60);
        assert_eq!(c.unseal_allowed(&k(1), now, &l), Ok(()));
        // After the lockout the next failure backs off at once.
        c.record_unseal(&k(1), now, true, &l);
        assert!(c.unseal_allowed(&k(1), now, &l).is_err());
        // Failures older than the window are forgotten.
        let later = now + Duration::from_secs(3600);
        c.record_unseal(&k(1), later, true, &l);
        assert_eq!(c.unseal_allowed(&k(1), later, &l), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_what_matters() {
        let l = limits();
        let t = Instant::now();
        let mut c = Callers::new(0);
        let cap = c.cap;
        c.open_connection(&k(1), true, t, &l).unwrap();
        for _ in 0..6 {
            c.record_unseal(&k(2), t, true, &l);
        }
        for uid in 10..(10 + 3 * cap as u32) {
            c.take_token(&k(uid), t + Duration::from_millis(u64::from(uid)), &l)
                .unwrap();
            assert!(c.len() <= cap);
        }
        // The connected caller and the locked-out caller were kept.
        assert!(c.map.contains_key(&k(1)));
        assert!(c.unseal_allowed(&k(2), t, &l).is_err());
    }

    #[test]
    fn rate_limited_logging_is_throttled() {
        let l = limits();
        let t = Instant::now();
        let mut c = Callers::default();
        assert_eq!(c.log_limited(&k(1), t, &l), Some(0));
        assert_eq!(c.log_limited(&k(1), t, &l), None);
        assert_eq!(c.log_limited(&k(1), t, &l), None);
        assert_eq!(
            c.log_limited(&k(1), t + Duration::from_secs(2), &l),
            Some(2)
        );
    }
}
