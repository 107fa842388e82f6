//! Guest sleeps that cannot outlast a call's time limit.
//!
//! Epoch interruption stops running wasm code, not a host call: a guest blocked in WASI's poll
//! (`std::thread::sleep`) would hold its thread for as long as it asked and only then fail. So
//! the linker's `wasi:clocks/monotonic-clock` subscriptions are replaced by ones that refuse,
//! at once, a wait that would end past the call's deadline; shorter waits behave as before.

use std::time::{Duration, Instant};

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::HostMonotonicClock;

use crate::runtime::State;

/// The interface wasmtime-wasi's `add_to_linker_sync` defines; guests importing an older 0.2.x
/// resolve to it by semver.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A guest asked to wait past its call's deadline; the call fails as a time-limit hit.
#[derive(Debug, thiserror::Error)]
#[error("it asked to sleep {asked:?}, past its deadline")]
pub(crate) struct SleepPastDeadline {
    /// How long the guest wanted to wait.
    pub(crate) asked: Duration,
}

/// Shadows `subscribe-duration` and `subscribe-instant` with deadline-aware versions.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, State>, (nanos,): (u64,)| {
            store
                .data_mut()
                .sleep(Duration::from_nanos(nanos))
                .map(|p| (p,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, State>, (when,): (u64,)| {
            let state = store.data_mut();
            let now = state.guest_clock.now();
            state
                .sleep(Duration::from_nanos(when.saturating_sub(now)))
                .map(|p| (p,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is ready at an instant, as wasmtime-wasi's own clock pollable.
enum Sleep {
    /// Ready now, after yielding once so a guest polling in a loop does not starve tokio.
    Past {
        yielded: bool,
    },
    Until(tokio::time::Instant),
    Never,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        match self {
            Sleep::Past { yielded: true } => {}
            Sleep::Past { yielded } => {
                *yielded = true;
                tokio::task::yield_now().await;
            }
            Sleep::Until(at) => tokio::time::sleep_until(*at).await,
            Sleep::Never => std::future::pending().await,
        }
    }
}

/// A pollable for a wait of `duration`, refused if it would end after `deadline`.
pub(crate) fn subscribe(
    table: &mut ResourceTable,
    duration: Duration,
    deadline: Option<Instant>,
) -> wasmtime::Result<Resource<DynPollable>> {
    if let Some(deadline) = deadline {
        if Instant::now()
            .checked_add(duration)
            .is_none_or(|end| end > deadline)
        {
            return Err(SleepPastDeadline { asked: duration }.into());
        }
    }
    let sleep = if duration.is_zero() {
        Sleep::Past { yielded: false }
    } else {
        match tokio::time::Instant::now().checked_add(duration) {
            Some(at) => Sleep::Until(at),
            None => Sleep::Never,
        }
    };
    let sleep = table.push(sleep)?;
    wasmtime_wasi::p2::subscribe(table, sleep)
}

/// The monotonic clock a guest reads: stopped for deterministic components, real otherwise.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GuestClock {
    /// Always 0.
    Stopped,
    /// Nanoseconds since the instance was created.
    Real(Instant),
}

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        match self {
            GuestClock::Stopped => 0,
            GuestClock::Real(start) => start.elapsed().as_nanos().try_into().unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_ending_past_the_deadline_are_refused_and_others_are_not() {
        let mut table = ResourceTable::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(subscribe(&mut table, Duration::from_millis(5), Some(deadline)).is_ok());
        assert!(subscribe(&mut table, Duration::from_secs(3600), None).is_ok());
        assert!(subscribe(&mut table, Duration::MAX, None).is_ok());
        let err = subscribe(&mut table, Duration::from_secs(11), Some(deadline)).unwrap_err();
        let past = err.downcast_ref::<SleepPastDeadline>().unwrap();
        assert_eq!(past.asked, Duration::from_secs(11));
        assert!(subscribe(&mut table, Duration::MAX, Some(deadline)).is_err());
    }
}
