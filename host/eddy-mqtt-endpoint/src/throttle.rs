//! Failed logins slow their address down. Once an address has failed to log in, each further
//! attempt from it waits its turn before its password is checked, the turns spaced further
//! apart with every failure, so guessing costs time however many connections are opened. An
//! attempt whose turn is too far off is refused without a check. A good login, or an hour
//! without failures, clears the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The spacing after the first failure; it doubles with each further one.
const FIRST_STEP: Duration = Duration::from_millis(100);
/// The widest spacing.
const MAX_STEP: Duration = Duration::from_secs(5);
/// An attempt whose turn is further off than this is refused at once.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);
/// Failures are forgotten after this long without one.
const FORGET: Duration = Duration::from_secs(3600);
/// Addresses tracked at most; past it, those quiet longest are forgotten first.
const MAX_PEERS: usize = 100_000;

/// When a login attempt from an address may be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Check it at this instant (now, for an address with no failures).
    At(Instant),
    /// Refuse it unchecked: its turn is more than [`MAX_WAIT`] away.
    Refused,
}

#[derive(Debug)]
struct Peer {
    failures: u32,
    /// The earliest the next attempt may be checked.
    next: Instant,
    last_failure: Instant,
}

/// Failed logins by address.
#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    peers: Mutex<HashMap<IpAddr, Peer>>,
}

impl LoginThrottle {
    /// The turn of an attempt from `ip` arriving `now`; it books that turn, so attempts that
    /// arrive together are checked one after another.
    pub(crate) fn turn(&self, ip: IpAddr, now: Instant) -> Turn {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(peer) = peers.get_mut(&ip) else {
            return Turn::At(now);
        };
        if now.duration_since(peer.last_failure) > FORGET {
            peers.remove(&ip);
            return Turn::At(now);
        }
        let at = peer.next.max(now);
        if at.duration_since(now) > MAX_WAIT {
            return Turn::Refused;
        }
        peer.next = at + step(peer.failures);
        Turn::At(at)
    }

    /// A login from `ip` failed at `now`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            let mut quiet: Vec<(Instant, IpAddr)> =
                peers.iter().map(|(ip, p)| (p.last_failure, *ip)).collect();
            quiet.sort();
            for (_, ip) in quiet.iter().take(MAX_PEERS / 10) {
                peers.remove(ip);
            }
        }
        let peer = peers.entry(ip).or_insert(Peer {
            failures: 0,
            next: now,
            last_failure: now,
        });
        peer.failures = peer.failures.saturating_add(1);
        peer.last_failure = now;
        peer.next = peer.next.max(now + step(peer.failures));
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.remove(&ip);
    }
}

/// The spacing after `failures` failures.
fn step(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    FIRST_STEP
        .checked_mul(1 << (failures - 1).min(16))
        .map_or(MAX_STEP, |s| s.min(MAX_STEP))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn failures_space_out_an_addresss_attempts_and_a_good_login_clears_them() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        // No failures: at once, however many come together.
        assert_eq!(throttle.turn(A, t0), Turn::At(t0));
        assert_eq!(throttle.turn(A, t0), Turn::At(t0));
        throttle.failed(A, t0);
        // After one failure: 100 ms later, then spaced 100 ms apart.
        assert_eq!(throttle.turn(A, t0), Turn::At(t0 + ms(100)));
        assert_eq!(throttle.turn(A, t0), Turn::At(t0 + ms(200)));
        throttle.failed(A, t0 + ms(100));
        throttle.failed(A, t0 + ms(200));
        // Three failures: 400 ms apart, after the turns already booked.
        assert_eq!(throttle.turn(A, t0 + ms(200)), Turn::At(t0 + ms(600)));
        assert_eq!(throttle.turn(A, t0 + ms(200)), Turn::At(t0 + ms(1000)));
        // Another address is not held up.
        assert_eq!(throttle.turn(B, t0), Turn::At(t0));
        throttle.succeeded(A);
        assert_eq!(throttle.turn(A, t0 + ms(300)), Turn::At(t0 + ms(300)));
    }

    #[test]
    fn a_turn_too_far_off_is_refused_and_failures_are_forgotten_after_an_hour() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..20 {
            throttle.failed(A, t0);
        }
        // 5 s apart at most: the turns reach 30 s after a handful.
        let turns: Vec<Turn> = (0..8).map(|_| throttle.turn(A, t0)).collect();
        assert_eq!(turns[0], Turn::At(t0 + MAX_STEP));
        assert_eq!(turns[5], Turn::At(t0 + 6 * MAX_STEP));
        assert_eq!(turns[6], Turn::Refused);
        assert_eq!(turns[7], Turn::Refused);
        let later = t0 + FORGET + Duration::from_secs(1);
        assert_eq!(throttle.turn(A, later), Turn::At(later));
    }
}
