//! Reading a topic as a member of a consumer group.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_connector::{Error, Message, PartitionHook, Position, Result, Source};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Headers;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use crate::{config_error, forward_log, io_error, is_config, KafkaConfig};

/// Where a group with no committed offset for a partition starts reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the oldest message still kept.
    #[default]
    Earliest,
    /// Only messages produced after the consumer joined.
    Latest,
}

/// How long dropping a source waits for its consumer to leave the group. Leaving normally takes
/// about 100 ms; librdkafka's close can wait forever on a broker or group that stopped
/// answering (rust-rdkafka issue 509), and no task or runtime may hang on that.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// One topic read through a consumer group; see [`Source`].
///
/// Offsets are committed only by [`Source::commit`], never automatically, so what is committed
/// is exactly what the engine declared done. `poll` is cancel-safe: messages a cancelled poll
/// fetched come out of the next one. Dropping the source leaves the group, which blocks for
/// about 100 ms so the partitions move to the remaining members at once, and at most
/// [`CLOSE_WAIT`]: a close that takes longer goes on in the background.
pub struct KafkaSource {
    /// Taken by `drop`, which closes it on a thread of its own.
    consumer: ManuallyDrop<Arc<BaseConsumer<SourceContext>>>,
    topic: Arc<str>,
    broker: String,
    /// A fetch still running because the `poll` that started it was cancelled. Its messages were
    /// already taken from librdkafka, so the next `poll` must return them rather than start anew:
    /// dropping them would let a later commit skip over them.
    pending: Option<JoinHandle<Result<Vec<Message>>>>,
    /// Messages fetched beyond what the caller asked for, served first.
    ready: Vec<Message>,
}

impl KafkaSource {
    /// Joins the group `config.group_id` and subscribes to `topic`; partitions arrive once the
    /// group has balanced, during the first polls.
    pub fn subscribe(config: &KafkaConfig, topic: &str, offset_reset: OffsetReset) -> Result<Self> {
        let broker = config.bootstrap_servers.clone();
        if topic.is_empty() {
            return Err(config_error(&broker, "no topic given to read"));
        }
        if config.group_id.is_empty() {
            return Err(config_error(
                &broker,
                &format!("no consumer group given to read topic {topic}"),
            ));
        }
        let reset = match offset_reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        let client = config.client_config(
            // librdkafka stops fetching for a second whenever its local queue is full, which at
            // Eddy's rates idles the source half the time once the engine is the bottleneck.
            // A fetch waits at most 20 ms for data: a stream query's latency is bounded below
            // by it, and librdkafka's 500 ms default shows up as half-second stalls.
            &[
                ("fetch.queue.backoff.ms", "10"),
                ("fetch.wait.max.ms", "20"),
            ],
            &[
                ("group.id", config.group_id.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", reset),
            ],
        )?;
        let context = SourceContext {
            topic: topic.to_string(),
            broker: broker.clone(),
            start: std::sync::Mutex::new(BTreeMap::new()),
            hook: std::sync::Mutex::new(None),
            revoked: std::sync::Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<SourceContext> =
            client.create_with_context(context).map_err(|e| {
                let what = format!("creating a consumer for topic {topic}: {e}");
                if is_config(&e) {
                    config_error(&broker, &what)
                } else {
                    io_error(&broker, &what)
                }
            })?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| io_error(&broker, &format!("subscribing to topic {topic}: {e}")))?;
        Ok(KafkaSource {
            consumer: ManuallyDrop::new(Arc::new(consumer)),
            topic: topic.into(),
            broker,
            pending: None,
            ready: Vec::new(),
        })
    }

    /// The partitions of the topic this consumer holds now, in order.
    pub fn assignment(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = match self.consumer.assignment() {
            Ok(list) => list
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect(),
            Err(e) => {
                tracing::warn!(topic = %self.topic, broker = %self.broker, "kafka: reading the assignment: {e}");
                Vec::new()
            }
        };
        partitions.sort_unstable();
        partitions
    }

    /// The topic this source reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

#[async_trait::async_trait]
impl Source for KafkaSource {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<Message>>> {
        if !self.ready.is_empty() || max == 0 {
            let n = max.min(self.ready.len());
            return Ok(Some(self.ready.drain(..n).collect()));
        }
        let inherited = self.pending.is_some();
        if !inherited {
            let consumer = Arc::clone(&self.consumer);
            let topic = self.topic.clone();
            let broker = self.broker.clone();
            self.pending = Some(tokio::task::spawn_blocking(move || {
                fetch(&consumer, &topic, &broker, max, wait)
            }));
        }
        let Some(task) = self.pending.as_mut() else {
            unreachable!("a fetch is pending")
        };
        let fetched = if inherited {
            // Started by a cancelled poll, maybe with a longer wait than this caller's.
            match tokio::time::timeout(wait, task).await {
                Ok(fetched) => fetched,
                Err(_) => return Ok(Some(Vec::new())),
            }
        } else {
            // A fresh fetch keeps to `wait` by itself.
            task.await
        };
        self.pending = None;
        let mut messages = fetched.map_err(|e| {
            io_error(
                &self.broker,
                &format!("reading topic {}: fetch task failed: {e}", self.topic),
            )
        })??;
        // A fetch started by a cancelled poll may have been asked for more.
        if messages.len() > max {
            self.ready = messages.split_off(max);
        }
        Ok(Some(messages))
    }

    fn resume_from(&mut self, offsets: &BTreeMap<i32, i64>) {
        *self.consumer.context().start.lock().expect("start lock") = offsets.clone();
    }

    fn seek(&mut self, partition: i32, offset: i64) -> Result<()> {
        self.ready.retain(|m| m.position.partition != partition);
        // Without a wait, librdkafka seeks in the background; what it fetched of the partition
        // before is dropped, not returned.
        self.consumer
            .seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                Duration::ZERO,
            )
            .map_err(|e| {
                io_error(
                    &self.broker,
                    &format!(
                        "reading partition {partition} of topic {} again from offset {offset}: {e}",
                        self.topic
                    ),
                )
            })
    }

    fn watch_partitions(&mut self, hook: Arc<dyn PartitionHook>) {
        *self.consumer.context().hook.lock().expect("hook lock") = Some(hook);
    }

    fn lag(&self) -> Option<u64> {
        // Watermarks come cached from fetch responses and positions are local: no broker call.
        let positions = self.consumer.position().ok()?;
        let mut lag = 0u64;
        for element in positions.elements_for_topic(&self.topic) {
            let Some(position) = element.offset().to_raw().filter(|o| *o >= 0) else {
                continue;
            };
            let high = cached_high_watermark(&self.consumer, &self.topic, element.partition())?;
            lag += u64::try_from(high - position).unwrap_or(0);
        }
        Some(lag)
    }

    fn may_have_more(&self) -> Option<bool> {
        let positions = self.consumer.position().ok()?;
        let held = positions.elements_for_topic(&self.topic);
        if held.is_empty() {
            // Not in the group yet, or holding no partition of the topic.
            return None;
        }
        let mut more = false;
        for element in held {
            let high = cached_high_watermark(&self.consumer, &self.topic, element.partition())?;
            match element.offset().to_raw().filter(|o| *o >= 0) {
                Some(position) => more |= high > position,
                // Nothing read from it yet: only an empty partition is known to be read up.
                None if high > 0 => return None,
                None => {}
            }
        }
        Some(more)
    }

    async fn commit(&mut self, next: &BTreeMap<i32, i64>) -> Result<()> {
        if next.is_empty() {
            return Ok(());
        }
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let broker = self.broker.clone();
        let next = next.clone();
        tokio::task::spawn_blocking(move || commit(&consumer, &topic, &broker, &next))
            .await
            .map_err(|e| {
                io_error(
                    &self.broker,
                    &format!("committing topic {}: task failed: {e}", self.topic),
                )
            })?
    }
}

/// Waits up to `wait` for one message, then takes what is already there, up to `max`.
fn fetch(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    broker: &str,
    max: usize,
    wait: Duration,
) -> Result<Vec<Message>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        // `None` also comes back early when the poll only served a rebalance: wait on.
        let polled = consumer.poll(left);
        forget_revoked(consumer, &mut out);
        match polled {
            Some(Ok(m)) => out.push(convert(&m, topic)),
            Some(Err(e)) => consumer_error(e, topic, broker)?,
            None if left.is_zero() => return Ok(out),
            None => {}
        }
    }
    while out.len() < max {
        let polled = consumer.poll(Duration::ZERO);
        forget_revoked(consumer, &mut out);
        match polled {
            Some(Ok(m)) => out.push(convert(&m, topic)),
            Some(Err(e)) => consumer_error(e, topic, broker)?,
            None => break,
        }
    }
    Ok(out)
}

/// Drops the messages in `out` of partitions revoked by the poll that just returned: they were
/// fetched before the revocation, and whoever owns the partition now reads them again (a
/// message that poll returned came after it, and is kept).
fn forget_revoked(consumer: &BaseConsumer<SourceContext>, out: &mut Vec<Message>) {
    let mut revoked = consumer.context().revoked.lock().expect("revoked lock");
    if !revoked.is_empty() {
        out.retain(|m| !revoked.contains(&m.position.partition));
        revoked.clear();
    }
}

fn convert(m: &BorrowedMessage<'_>, topic: &str) -> Message {
    let (partition, offset) = (m.partition(), m.offset());
    Message {
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        no_value: m.payload().is_none(),
        timestamp_ms: m.timestamp().to_millis(),
        position: Position { partition, offset },
        origin: format!("{topic}[{partition}]@{offset}"),
        upstream: m.headers().and_then(|headers| {
            (0..headers.count())
                .map(|i| headers.get(i))
                .find(|h| h.key == crate::UPSTREAM_HEADER)
                .and_then(|h| crate::decode_upstream(h.value?))
        }),
    }
}

/// Fatal consumer errors end the read; librdkafka recovers from the rest by itself (a broker
/// restarting, a partition leader moving), so those are only logged.
fn consumer_error(error: KafkaError, topic: &str, broker: &str) -> Result<()> {
    match error {
        KafkaError::MessageConsumptionFatal(code) => Err(io_error(
            broker,
            &format!("reading topic {topic}: fatal consumer error: {code}"),
        )),
        KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)
        | KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopic) => Err(Error::Config(
            format!("kafka {broker}: topic {topic} does not exist"),
        )),
        KafkaError::PartitionEOF(_) => Ok(()),
        other => {
            tracing::warn!(topic, broker, "kafka: reading: {other}");
            Ok(())
        }
    }
}

fn commit(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    broker: &str,
    next: &BTreeMap<i32, i64>,
) -> Result<()> {
    let assigned = consumer
        .assignment()
        .map_err(|e| io_error(broker, &format!("committing topic {topic}: {e}")))?;
    let assigned: Vec<i32> = assigned
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    let mut list = TopicPartitionList::new();
    let mut skipped = Vec::new();
    for (&partition, &offset) in next {
        if assigned.contains(&partition) {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|e| io_error(broker, &format!("committing topic {topic}: {e}")))?;
        } else {
            skipped.push(partition);
        }
    }
    if !skipped.is_empty() {
        // The group moved these partitions elsewhere; their new owner resumes from the last
        // commit, so the messages since are read again there (at least once, never lost).
        tracing::warn!(
            topic,
            broker,
            ?skipped,
            "kafka: not committing partitions no longer assigned"
        );
    }
    if list.count() == 0 {
        return Ok(());
    }
    match consumer.commit(&list, CommitMode::Sync) {
        Ok(()) => Ok(()),
        // A rebalance overtook the commit; as with skipped partitions the next owner re-reads.
        Err(KafkaError::ConsumerCommit(
            code @ (RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId),
        )) => {
            tracing::warn!(
                topic,
                broker,
                "kafka: commit lost to a group rebalance: {code}"
            );
            Ok(())
        }
        Err(e) => Err(io_error(
            broker,
            &format!("committing offsets of topic {topic}: {e}"),
        )),
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and nothing uses the field after this.
        let mut consumer = unsafe { ManuallyDrop::take(&mut self.consumer) };
        let (topic, broker) = (self.topic.clone(), self.broker.clone());
        let (done, closed) = std::sync::mpsc::channel::<()>();
        let closer = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                // A fetch still running holds a clone: the close waits for it to return, so
                // that it runs here and never on the runtime's blocking pool, which a runtime
                // waits for when it shuts down.
                loop {
                    match Arc::try_unwrap(consumer) {
                        Ok(consumer) => break drop(consumer),
                        Err(shared) => consumer = shared,
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = done.send(());
            });
        if let Err(e) = closer {
            tracing::warn!(%topic, %broker, "kafka: no thread to leave the group on: {e}");
            return;
        }
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(CLOSE_WAIT) {
            tracing::warn!(%topic, %broker, "kafka: leaving the group took over {CLOSE_WAIT:?}; it goes on in the background");
        }
    }
}

/// Names the topic and broker in librdkafka's logs, reports partition moves, and starts
/// partitions at restored offsets.
struct SourceContext {
    topic: String,
    broker: String,
    /// Partitions to start at these offsets when next assigned, rather than at the group's
    /// committed offset: where a restored checkpoint left off.
    start: std::sync::Mutex<BTreeMap<i32, i64>>,
    /// Told of every assignment and revocation; it may set where assigned partitions start.
    hook: std::sync::Mutex<Option<Arc<dyn PartitionHook>>>,
    /// Partitions revoked since the fetch loop last looked, whose fetched messages it drops.
    revoked: std::sync::Mutex<Vec<i32>>,
}

impl SourceContext {
    /// How many partitions the topic has, from the broker; 0 if it cannot tell.
    fn partition_count(&self, consumer: &BaseConsumer<Self>) -> usize {
        match consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(5)) {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .find(|t| t.name() == self.topic)
                .map_or(0, |t| t.partitions().len()),
            Err(e) => {
                tracing::warn!(topic = %self.topic, broker = %self.broker, "kafka: reading the topic's partition count: {e}");
                0
            }
        }
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.topic, broker = %self.broker, "kafka: {error}: {reason}");
    }
}

impl ConsumerContext for SourceContext {
    /// librdkafka's own rebalance (assign or unassign, eager or cooperative), with partitions
    /// that have a start offset set to it: the only place a new assignment can be positioned
    /// before its first fetch.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let hook = self.hook.lock().expect("hook lock").clone();
                let from_hook = match hook {
                    Some(hook) => hook.assigned(&assigned, self.partition_count(consumer)),
                    None => BTreeMap::new(),
                };
                let mut start = self.start.lock().expect("start lock");
                for partition in assigned {
                    let restored = start.remove(&partition);
                    if let Some(offset) = from_hook.get(&partition).copied().or(restored) {
                        tracing::info!(topic = %self.topic, partition, offset, "kafka: resuming from a checkpoint");
                        if let Err(e) =
                            tpl.set_partition_offset(&self.topic, partition, Offset::Offset(offset))
                        {
                            tracing::warn!(topic = %self.topic, partition, "kafka: positioning a partition: {e}");
                        }
                    }
                }
                drop(start);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                if let Some(hook) = self.hook.lock().expect("hook lock").clone() {
                    hook.revoked(&revoked);
                }
                self.revoked.lock().expect("revoked lock").extend(revoked);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, broker = %self.broker, "kafka: applying a rebalance: {e}");
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.post_rebalance(consumer, &rebalance);
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| -> Vec<i32> {
            list.elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect()
        };
        match rebalance {
            Rebalance::Assign(list) => tracing::info!(
                topic = %self.topic,
                broker = %self.broker,
                partitions = ?partitions(list),
                "kafka: partitions assigned"
            ),
            Rebalance::Revoke(list) => tracing::info!(
                topic = %self.topic,
                broker = %self.broker,
                partitions = ?partitions(list),
                "kafka: partitions revoked"
            ),
            Rebalance::Error(e) => tracing::warn!(
                topic = %self.topic,
                broker = %self.broker,
                "kafka: rebalance failed: {e}"
            ),
        }
    }
}

/// The partition's high watermark as librdkafka last saw it in a fetch response; `None` before
/// the first fetch. rdkafka's safe API only has the variant that asks the broker.
fn cached_high_watermark(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; librdkafka only reads the
    // topic string and writes the two offsets, which outlive the call.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
