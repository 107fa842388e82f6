//! The process's open-file limit, and connection caps that fit under it: a server whose caps
//! exceed `ulimit -n` runs out of descriptors before any cap refuses a connection, and then
//! cannot even answer `/healthcheck`.

use anyhow::{bail, Result};

/// Descriptors kept for everything but client connections: listeners, broker sockets, state
/// and checkpoint files, the UDF directory, the compile cache.
pub(crate) const RESERVED: u64 = 128;

/// Connection caps after [`fit`]: what was asked, or less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) http: usize,
    pub(crate) mqtt: usize,
}

/// Raises the soft open-file limit to the hard one (as most servers do at start), then lowers
/// the caps, in proportion, until they fit under it with [`RESERVED`] to spare. Returns the
/// caps and the limit when they had to be lowered.
pub(crate) fn fit(asked: Caps) -> Result<(Caps, Option<u64>)> {
    let limit = raise_open_files();
    fit_under(asked, limit)
}

/// [`fit`] for a known limit (`None`: unlimited or unknown).
pub(crate) fn fit_under(asked: Caps, limit: Option<u64>) -> Result<(Caps, Option<u64>)> {
    let Some(limit) = limit else {
        return Ok((asked, None));
    };
    if limit < 2 * RESERVED {
        bail!(
            "Eddy needs at least {} open files to serve connections, and `ulimit -n` allows {limit}: raise it",
            2 * RESERVED
        );
    }
    let room = (limit - RESERVED) as usize;
    let total = asked.http + asked.mqtt;
    if total <= room {
        return Ok((asked, None));
    }
    if asked.http == 0 || asked.mqtt == 0 {
        let caps = Caps {
            http: asked.http.min(room),
            mqtt: asked.mqtt.min(room),
        };
        return Ok((caps, Some(limit)));
    }
    // In proportion; each keeps at least one, and together they use the room exactly.
    let http = (asked.http * room / total).clamp(1, room - 1);
    Ok((
        Caps {
            http,
            mqtt: room - http,
        },
        Some(limit),
    ))
}

/// The soft `RLIMIT_NOFILE` after raising it to the hard one; `None` if unlimited or unknown.
#[cfg(unix)]
fn raise_open_files() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn raise_open_files() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_shrink_in_proportion_only_when_they_do_not_fit() {
        let asked = Caps {
            http: 1000,
            mqtt: 10_000,
        };
        assert_eq!(fit_under(asked, None).unwrap(), (asked, None));
        assert_eq!(fit_under(asked, Some(1 << 20)).unwrap(), (asked, None));
        // 256 - 128 = 128 connections in all.
        assert_eq!(
            fit_under(asked, Some(256)).unwrap(),
            (
                Caps {
                    http: 11,
                    mqtt: 117
                },
                Some(256)
            )
        );
        let no_mqtt = Caps {
            http: 1000,
            mqtt: 0,
        };
        assert_eq!(
            fit_under(no_mqtt, Some(256)).unwrap().0,
            Caps { http: 128, mqtt: 0 }
        );
        let proxy = Caps {
            http: 0,
            mqtt: 10_000,
        };
        assert_eq!(
            fit_under(proxy, Some(1024)).unwrap().0,
            Caps { http: 0, mqtt: 896 }
        );
        assert_eq!(
            fit_under(asked, Some(100)).unwrap_err().to_string(),
            "Eddy needs at least 256 open files to serve connections, and `ulimit -n` allows 100: raise it"
        );
    }
}
