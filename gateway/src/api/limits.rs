//! Rate limits: how much of each costly or abusable action one user, or one client
//! address, may take. Token buckets per key (`governor`), a growing back-off for
//! failed logins, and a refusal counter per limit for `/metrics`.
//!
//! Every limit is configuration; `rate_limits = "off"` (or `COURIER_RATE_LIMITS=off`)
//! turns all of them off at once, for benchmarks and load tests. Keys that have not
//! been seen for a while are forgotten by [`RateLimits::sweep`], which the server runs
//! every minute, so the maps stay as small as the set of recently active keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{Config, Switch};
use crate::error::ApiError;

/// The limits, by name (the `limit` label in `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Messages a user sends.
    Send,
    /// Messages to people who are not friends and never answered.
    StrangerSend,
    /// Groups a user creates.
    GroupCreate,
    /// Users a user adds or invites to groups.
    MemberAdd,
    /// Friend requests a user makes.
    FriendRequest,
    /// Presence queries and subscriptions of a user.
    Presence,
    /// Media uploads of a user.
    Upload,
    /// Login attempts for one account (growing back-off after failures).
    LoginAccount,
    /// Login attempts from one address (a quota and a growing back-off).
    LoginAddress,
    /// Registrations from one address.
    Register,
    /// HTTP requests of one user.
    HttpUser,
    /// HTTP requests from one address.
    HttpAddress,
}

impl Limit {
    /// Every limit, in the order of the counters.
    pub const ALL: [Limit; 12] = [
        Limit::Send,
        Limit::StrangerSend,
        Limit::GroupCreate,
        Limit::MemberAdd,
        Limit::FriendRequest,
        Limit::Presence,
        Limit::Upload,
        Limit::LoginAccount,
        Limit::LoginAddress,
        Limit::Register,
        Limit::HttpUser,
        Limit::HttpAddress,
    ];

    /// The label used in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Send => "send",
            Limit::StrangerSend => "stranger_send",
            Limit::GroupCreate => "group_create",
            Limit::MemberAdd => "member_add",
            Limit::FriendRequest => "friend_request",
            Limit::Presence => "presence",
            Limit::Upload => "upload",
            Limit::LoginAccount => "login_account",
            Limit::LoginAddress => "login_address",
            Limit::Register => "register",
            Limit::HttpUser => "http_user",
            Limit::HttpAddress => "http_address",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Limit::Send => "too many messages; slow down",
            Limit::StrangerSend => {
                "too many messages to people who are not your friends and have not answered"
            }
            Limit::GroupCreate => "too many groups created",
            Limit::MemberAdd => "too many group members added",
            Limit::FriendRequest => "too many friend requests",
            Limit::Presence => "too many presence queries",
            Limit::Upload => "too many uploads",
            Limit::LoginAccount | Limit::LoginAddress => "too many login attempts",
            Limit::Register => "too many registrations from this address",
            Limit::HttpUser | Limit::HttpAddress => "too many requests",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (one host's share of a
/// network), so that an IPv6 client cannot mint a fresh key per request.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// A token bucket per key.
struct Buckets<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(quota: Quota) -> Self {
        Self {
            limiter: governor::RateLimiter::keyed(quota),
        }
    }

    /// Takes `n` cells for `key`; on refusal, how long until they would be there.
    fn take(&self, key: &K, n: u32) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.limiter.clock().now())),
            // More than the bucket holds at all: never, within this quota.
            Err(_) => Err(Duration::from_secs(60)),
        }
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// Failures per key with a lock-out that doubles with each failure past the free
/// ones; a success clears the key.
struct Backoff<K: Hash + Eq> {
    free_failures: u32,
    base: Duration,
    max: Duration,
    entries: Mutex<HashMap<K, BackoffEntry>>,
}

#[derive(Debug, Clone, Copy)]
struct BackoffEntry {
    failures: u32,
    locked_until: Instant,
    last_failure: Instant,
}

impl<K: Hash + Eq> Backoff<K> {
    fn new(free_failures: u32, base: Duration, max: Duration) -> Self {
        Self {
            free_failures,
            base,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("backoff lock");
        match entries.get(key) {
            Some(e) if e.locked_until > now => Err(e.locked_until - now),
            _ => Ok(()),
        }
    }

    fn failed(&self, key: K) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("backoff lock");
        let e = entries.entry(key).or_insert(BackoffEntry {
            failures: 0,
            locked_until: now,
            last_failure: now,
        });
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures > self.free_failures {
            let doublings = (e.failures - self.free_failures - 1).min(30);
            let wait = self.base.saturating_mul(1 << doublings).min(self.max);
            e.locked_until = now + wait;
        }
    }

    fn succeeded(&self, key: &K) {
        self.entries.lock().expect("backoff lock").remove(key);
    }

    /// Forgets keys whose lock-out is over and whose last failure is older than the
    /// longest lock-out.
    fn sweep(&self) {
        let now = Instant::now();
        let max = self.max;
        self.entries
            .lock()
            .expect("backoff lock")
            .retain(|_, e| e.locked_until > now || now.duration_since(e.last_failure) < max);
    }

    fn len(&self) -> usize {
        self.entries.lock().expect("backoff lock").len()
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"))
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n.max(1)).expect("at least 1"))
}

/// Every rate limit of the server.
pub struct RateLimits {
    enabled: bool,
    send: Buckets<u64>,
    stranger_send: Buckets<u64>,
    group_create: Buckets<u64>,
    member_add: Buckets<u64>,
    friend_request: Buckets<u64>,
    presence: Buckets<u64>,
    upload: Buckets<u64>,
    login_account: Backoff<String>,
    login_address_failures: Backoff<IpAddr>,
    login_address: Buckets<IpAddr>,
    register: Buckets<IpAddr>,
    http_user: Buckets<u64>,
    http_address: Buckets<IpAddr>,
    refused: [AtomicU64; Limit::ALL.len()],
}

impl RateLimits {
    /// The limits `config` asks for.
    pub fn new(config: &Config) -> Self {
        let max_backoff = Duration::from_secs(config.login_backoff_max_secs.max(1));
        let base = Duration::from_secs(1);
        Self {
            enabled: config.rate_limits == Switch::On,
            send: Buckets::new(per_minute(config.rate_sends_per_minute)),
            stranger_send: Buckets::new(per_minute(config.rate_stranger_sends_per_minute)),
            group_create: Buckets::new(per_hour(config.rate_groups_per_hour)),
            member_add: Buckets::new(per_minute(config.rate_member_adds_per_minute)),
            friend_request: Buckets::new(per_hour(config.rate_friend_requests_per_hour)),
            presence: Buckets::new(per_minute(config.rate_presence_queries_per_minute)),
            upload: Buckets::new(per_minute(config.media_uploads_per_minute)),
            login_account: Backoff::new(config.login_free_failures, base, max_backoff),
            // An address may try several accounts: it gets more failures for free.
            login_address_failures: Backoff::new(
                config.login_free_failures.saturating_mul(4),
                base,
                max_backoff,
            ),
            login_address: Buckets::new(per_minute(config.rate_logins_per_address_per_minute)),
            register: Buckets::new(per_hour(config.rate_registrations_per_address_per_hour)),
            http_user: Buckets::new(per_minute(config.rate_http_per_user_per_minute)),
            http_address: Buckets::new(per_minute(config.rate_http_per_address_per_minute)),
            refused: Default::default(),
        }
    }

    /// Whether limits are enforced at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn refuse(&self, limit: Limit, wait: Duration) -> ApiError {
        self.refused[limit.index()].fetch_add(1, Ordering::Relaxed);
        ApiError::rate_limited(limit.message(), wait.max(Duration::from_millis(1)))
    }

    /// Takes one of `limit` for `user` (a per-user limit).
    pub fn user(&self, limit: Limit, user: u64) -> Result<(), ApiError> {
        self.user_n(limit, user, 1)
    }

    /// Takes `n` of `limit` for `user` (a per-user limit).
    pub fn user_n(&self, limit: Limit, user: u64, n: u32) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let buckets = match limit {
            Limit::Send => &self.send,
            Limit::StrangerSend => &self.stranger_send,
            Limit::GroupCreate => &self.group_create,
            Limit::MemberAdd => &self.member_add,
            Limit::FriendRequest => &self.friend_request,
            Limit::Presence => &self.presence,
            Limit::Upload => &self.upload,
            Limit::HttpUser => &self.http_user,
            other => unreachable!("{other:?} is not a per-user limit"),
        };
        buckets
            .take(&user, n)
            .map_err(|wait| self.refuse(limit, wait))
    }

    /// Takes one of `limit` for a client address (a per-address limit).
    pub fn address(&self, limit: Limit, ip: IpAddr) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let buckets = match limit {
            Limit::LoginAddress => &self.login_address,
            Limit::Register => &self.register,
            Limit::HttpAddress => &self.http_address,
            other => unreachable!("{other:?} is not a per-address limit"),
        };
        buckets
            .take(&address_key(ip), 1)
            .map_err(|wait| self.refuse(limit, wait))
    }

    /// Before a login attempt: the address's quota, then both back-offs.
    pub fn login_attempt(&self, name: &str, ip: IpAddr) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let ip = address_key(ip);
        self.login_address_failures
            .check(&ip)
            .map_err(|wait| self.refuse(Limit::LoginAddress, wait))?;
        self.login_account
            .check(&name.to_owned())
            .map_err(|wait| self.refuse(Limit::LoginAccount, wait))?;
        self.address(Limit::LoginAddress, ip)
    }

    /// After a login attempt: a failure grows both back-offs, a success clears the
    /// account's.
    pub fn login_outcome(&self, name: &str, ip: IpAddr, ok: bool) {
        if !self.enabled {
            return;
        }
        let ip = address_key(ip);
        if ok {
            self.login_account.succeeded(&name.to_owned());
        } else {
            self.login_account.failed(name.to_owned());
            self.login_address_failures.failed(ip);
        }
    }

    /// Refusals so far, by limit.
    pub fn refused(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        Limit::ALL
            .into_iter()
            .map(|l| (l, self.refused[l.index()].load(Ordering::Relaxed)))
    }

    fn per_user(&self) -> [&Buckets<u64>; 8] {
        [
            &self.send,
            &self.stranger_send,
            &self.group_create,
            &self.member_add,
            &self.friend_request,
            &self.presence,
            &self.upload,
            &self.http_user,
        ]
    }

    fn per_address(&self) -> [&Buckets<IpAddr>; 3] {
        [&self.login_address, &self.register, &self.http_address]
    }

    /// Keys held right now, all limits together.
    pub fn keys(&self) -> usize {
        self.per_user().iter().map(|b| b.len()).sum::<usize>()
            + self.per_address().iter().map(|b| b.len()).sum::<usize>()
            + self.login_account.len()
            + self.login_address_failures.len()
    }

    /// Forgets keys whose buckets are full again and back-offs that are over.
    pub fn sweep(&self) {
        self.per_user().iter().for_each(|b| b.sweep());
        self.per_address().iter().for_each(|b| b.sweep());
        self.login_account.sweep();
        self.login_address_failures.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(tweak: impl FnOnce(&mut Config)) -> RateLimits {
        let mut config = Config::default();
        tweak(&mut config);
        RateLimits::new(&config)
    }

    #[test]
    fn a_bucket_refuses_past_its_quota_and_says_how_long_to_wait() {
        let l = limits(|c| c.rate_sends_per_minute = 3);
        for _ in 0..3 {
            l.user(Limit::Send, 1).unwrap();
        }
        let e = l.user(Limit::Send, 1).unwrap_err();
        assert_eq!(e.code, courier_protocol::ErrorCode::RateLimited);
        let wait = e.retry_after.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another user has its own bucket.
        l.user(Limit::Send, 2).unwrap();
        assert_eq!(l.refused().find(|(k, _)| *k == Limit::Send).unwrap().1, 1);
    }

    #[test]
    fn the_switch_turns_every_limit_off() {
        let l = limits(|c| {
            c.rate_limits = Switch::Off;
            c.rate_sends_per_minute = 1;
        });
        for _ in 0..100 {
            l.user(Limit::Send, 1).unwrap();
            l.address(Limit::Register, "10.0.0.1".parse().unwrap())
                .unwrap();
            l.login_attempt("a", "10.0.0.1".parse().unwrap()).unwrap();
            l.login_outcome("a", "10.0.0.1".parse().unwrap(), false);
        }
    }

    #[test]
    fn failed_logins_lock_the_account_out_for_longer_and_longer() {
        let l = limits(|c| c.login_free_failures = 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..2 {
            l.login_attempt("alice", ip).unwrap();
            l.login_outcome("alice", ip, false);
        }
        l.login_attempt("alice", ip).unwrap();
        l.login_outcome("alice", ip, false);
        let first = l
            .login_attempt("alice", ip)
            .unwrap_err()
            .retry_after
            .unwrap();
        assert!(first <= Duration::from_secs(1));
        l.login_outcome("alice", ip, false);
        let second = l
            .login_attempt("alice", ip)
            .unwrap_err()
            .retry_after
            .unwrap();
        assert!(second > Duration::from_secs(1) && second <= Duration::from_secs(2));
        // Other accounts are not locked by alice's failures.
        l.login_attempt("bob", ip).unwrap();
    }

    #[test]
    fn ipv6_addresses_share_a_key_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn sweeping_forgets_idle_keys() {
        let l = limits(|c| c.rate_sends_per_minute = 1000);
        l.user(Limit::Send, 1).unwrap();
        assert!(l.keys() >= 1);
        // One cell refills in 60 ms; a key is forgotten once it is a cell past full.
        std::thread::sleep(Duration::from_millis(200));
        l.sweep();
        assert_eq!(l.keys(), 0);
    }
}
