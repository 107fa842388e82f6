//! The contract between Eddy's engine and the systems it reads from and writes to.
//!
//! A [`Source`] hands the engine raw messages in order and commits what the engine says is
//! done; a [`Sink`] takes encoded records and says when they are durable. The engine decodes,
//! runs SQL and decides when to commit, so connectors know nothing of SQL or Arrow, and the
//! engine knows nothing of Kafka or MQTT.

use std::collections::BTreeMap;
use std::time::Duration;

/// What can go wrong talking to an external system.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connector's options are wrong (a missing topic, a bad address, an unknown key).
    #[error("{0}")]
    Config(String),
    /// The external system failed or could not be reached.
    #[error("{0}")]
    Io(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a message sits in its source: a partition and an offset within it.
///
/// Sources without partitions (MQTT) use partition 0 and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// One message read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message key, if it has one.
    pub key: Option<Vec<u8>>,
    /// The payload, still encoded in the relation's value format; empty when it has none.
    pub payload: Vec<u8>,
    /// Whether the record had no value at all (Kafka's null value, a table's tombstone), not
    /// an empty one.
    pub no_value: bool,
    /// The time the system attached to the message, in ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Where it came from; what [`Source::commit`] takes back.
    pub position: Position,
    /// A human-readable origin for errors and dead letters, e.g. `cars[2]@1041` or an MQTT topic.
    pub origin: String,
    /// Where it was first read, when a query forwarded it unchanged to another partition (a
    /// repartition topic): how duplicates of a forward that ran twice are recognised.
    pub upstream: Option<Position>,
}

/// A record to write to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The encoded payload; `None` for a tombstone (a key whose row was deleted).
    pub payload: Option<Vec<u8>>,
    /// Event time to attach, in ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// The partition to write it to; `None` lets the destination choose (by key).
    pub partition: Option<i32>,
    /// Where a forwarded message was first read (see [`Message::upstream`]).
    pub upstream: Option<Position>,
}

/// Options from a statement's `WITH (…)`, keys lower-cased.
pub type Options = BTreeMap<String, String>;

/// A source of messages, read by one query.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Up to `max` messages, waiting at most `wait` for the first; an empty vector means none
    /// arrived in time. `Ok(None)` means the source has ended and will never return more.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<Message>>>;

    /// Everything before `next` in each named partition is done (its output is durable): the
    /// source may record that, so a restarted query resumes at `next`.
    ///
    /// `next` holds, per partition, the offset of the first message *not* done.
    async fn commit(&mut self, next: &BTreeMap<i32, i64>) -> Result<()>;

    /// Starts each listed partition at the given offset (the next message to read) instead of
    /// where the source would resume by itself: where restored state left off. Sources without
    /// offsets ignore it.
    fn resume_from(&mut self, _offsets: &BTreeMap<i32, i64>) {}

    /// Reads `partition` again from `offset`, dropping what was fetched of it beyond: a reader
    /// that found a hole waits for it to fill. Sources without offsets ignore it.
    fn seek(&mut self, _partition: i32, _offset: i64) -> Result<()> {
        Ok(())
    }

    /// Tells `hook` whenever the source gains or loses partitions (a Kafka consumer group
    /// moving them between processes). Sources whose partitions never move ignore it.
    fn watch_partitions(&mut self, _hook: std::sync::Arc<dyn PartitionHook>) {}

    /// Messages waiting in the source beyond what was read, if the source can tell (Kafka's
    /// consumer lag); a cheap local estimate, called once per step.
    fn lag(&self) -> Option<u64> {
        None
    }

    /// Whether messages are known to wait beyond what was read: `Some(false)` once every
    /// partition it holds is read to its end, `None` while it cannot tell (no partitions yet,
    /// or a partition not fetched from yet). A join waits for an input that may have earlier
    /// events before going on with the other.
    fn may_have_more(&self) -> Option<bool> {
        self.lag().map(|lag| lag > 0)
    }
}

/// Told about partitions as they move to and from a [`Source`]; see
/// [`Source::watch_partitions`]. Called on the source's fetching thread, before any message of
/// a newly assigned partition is returned.
pub trait PartitionHook: Send + Sync {
    /// `partitions` (of `of` the topic has) were assigned. Returns where to start those it has
    /// state for: the offset of the next message to read; the others start where the source
    /// would resume by itself.
    fn assigned(&self, partitions: &[i32], of: usize) -> BTreeMap<i32, i64>;

    /// `partitions` were taken away. Messages of theirs fetched but not yet returned are
    /// dropped: whoever reads the partition next reads them again.
    fn revoked(&self, partitions: &[i32]);
}

/// A destination for records, written by one query.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Queues records for delivery, in order; may wait while the destination is saturated.
    async fn send(&mut self, records: Vec<Record>) -> Result<()>;

    /// Waits until every record sent so far is acknowledged by the destination.
    async fn flush(&mut self) -> Result<()>;
}

/// How long [`Source::poll`] callers wait by default before checking for shutdown.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_millis(100);
