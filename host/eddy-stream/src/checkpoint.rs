//! Durable query state: a checkpoint per commit interval, with the source offsets it reflects.
//!
//! A checkpoint is one object, written whole through `object_store` (a local directory by
//! default), so a reader sees either the old one or the new one, never half: `LocalFileSystem`
//! writes to a staging file and renames it. Its layout:
//!
//! ```text
//! b"EDDYCKPT" | u32 LE version | u64 LE header length | header (JSON) | sections | SHA-256
//! ```
//!
//! The header holds the offsets, small metadata and each section's name and length; a section
//! is one Arrow IPC stream (aggregation groups, sessions, table rows). The trailing SHA-256
//! covers everything before it, so a truncated or corrupt file is detected, never half-loaded.
//! The newest two checkpoints are kept: a corrupt newest one falls back to the one before.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"EDDYCKPT";
const VERSION: u32 = 1;
/// Checkpoints kept per query: the newest, and one to fall back to.
const KEEP: usize = 2;

/// What a query's state is made of at one point of its input.
#[derive(Debug, Default, Clone)]
pub(crate) struct Checkpoint {
    /// Per input partition, the offset of the next message to read.
    pub offsets: BTreeMap<i32, i64>,
    /// Small values (stream time, open fixed windows, counters).
    pub meta: Map<String, Value>,
    /// Larger state, one batch each: aggregation groups, sessions, table rows.
    pub sections: BTreeMap<String, RecordBatch>,
}

impl Checkpoint {
    /// Records a stream–stream join's right-side offsets (`offsets` holds the left side's).
    pub(crate) fn set_right_offsets(&mut self, right: &BTreeMap<i32, i64>) {
        self.set_offsets_named("right_offsets", right);
    }

    /// A stream–stream join's right-side offsets, if it has them.
    pub(crate) fn right_offsets(&self) -> Option<BTreeMap<i32, i64>> {
        self.offsets_named("right_offsets")
    }

    /// Records, for a query reading a repartition topic, what its state has counted of each
    /// partition of the topic the rows were first read from.
    pub(crate) fn set_upstream_offsets(&mut self, upstream: &BTreeMap<i32, i64>) {
        self.set_offsets_named("upstream_offsets", upstream);
    }

    /// What [`Checkpoint::set_upstream_offsets`] recorded; empty if nothing.
    pub(crate) fn upstream_offsets(&self) -> BTreeMap<i32, i64> {
        self.offsets_named("upstream_offsets").unwrap_or_default()
    }

    fn set_offsets_named(&mut self, name: &str, offsets: &BTreeMap<i32, i64>) {
        let map: Map<String, Value> = offsets
            .iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect();
        self.meta.insert(name.into(), Value::Object(map));
    }

    fn offsets_named(&self, name: &str) -> Option<BTreeMap<i32, i64>> {
        let map = self.meta.get(name)?.as_object()?;
        map.iter()
            .map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
            .collect()
    }

    /// Its bytes, checksummed.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut sections = Vec::new();
        for (name, batch) in &self.sections {
            let start = body.len();
            let mut writer = StreamWriter::try_new(&mut body, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()?;
            sections.push(json!({"name": name, "bytes": body.len() - start}));
        }
        let offsets: Map<String, Value> = self
            .offsets
            .iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect();
        let header = serde_json::to_vec(&json!({
            "offsets": offsets,
            "meta": self.meta,
            "sections": sections,
        }))
        .expect("JSON encodes");
        let mut out = Vec::with_capacity(24 + header.len() + body.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        Ok(out)
    }

    /// Reads `bytes` back; a clear error if they are not a whole, intact checkpoint.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
        if bytes.len() < MAGIC.len() + 12 + 32 || &bytes[..8] != MAGIC {
            return Err(format!(
                "not a checkpoint, or truncated ({} bytes)",
                bytes.len()
            ));
        }
        let (content, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(content).as_slice() != digest {
            return Err("checksum mismatch: the file is truncated or corrupt".into());
        }
        let version = u32::from_le_bytes(content[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!(
                "version {version}, this Eddy reads version {VERSION}"
            ));
        }
        let header_len = u64::from_le_bytes(content[12..20].try_into().expect("8 bytes")) as usize;
        let header = content
            .get(20..20 + header_len)
            .ok_or("the header is cut short")?;
        let header: Value =
            serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
        let mut offsets = BTreeMap::new();
        for (p, o) in header["offsets"].as_object().into_iter().flatten() {
            let p: i32 = p.parse().map_err(|_| format!("bad partition {p}"))?;
            offsets.insert(p, o.as_i64().ok_or("bad offset")?);
        }
        let meta = header["meta"].as_object().cloned().unwrap_or_default();
        let mut sections = BTreeMap::new();
        let mut at = 20 + header_len;
        for s in header["sections"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().ok_or("a section without a name")?;
            let len = s["bytes"].as_u64().ok_or("a section without a length")? as usize;
            let data = content
                .get(at..at + len)
                .ok_or_else(|| format!("section {name} is cut short"))?;
            at += len;
            let reader =
                StreamReader::try_new(data, None).map_err(|e| format!("section {name}: {e}"))?;
            let schema = reader.schema();
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("section {name}: {e}"))?;
            let batch = arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| format!("section {name}: {e}"))?;
            sections.insert(name.to_string(), batch);
        }
        Ok(Checkpoint {
            offsets,
            meta,
            sections,
        })
    }

    /// Section `name`, or an error naming what the checkpoint lacks.
    pub(crate) fn section(&self, name: &str) -> Result<&RecordBatch> {
        self.sections
            .get(name)
            .ok_or_else(|| Error::State(format!("the checkpoint has no {name}")))
    }
}

/// Where the checkpoints of one deployment (`--service-id`) live.
#[derive(Debug, Clone)]
pub struct StateStore {
    store: Arc<dyn ObjectStore>,
    /// The directory, as a path in `store`.
    root: StorePath,
    /// Shown in messages: the directory or URL.
    location: String,
    service: String,
}

impl StateStore {
    /// Checkpoints at `location`, for `service`: a local directory, or the URL
    /// `s3://bucket/prefix` of an S3-compatible store, set up from the environment as AWS's own
    /// tools are (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`;
    /// `AWS_ALLOW_HTTP=true` for an endpoint without TLS).
    pub fn open(location: &str, service: &str) -> Result<StateStore> {
        match location.split_once("://") {
            None => Self::local(Path::new(location), service),
            Some(("file", path)) => Self::local(Path::new(path), service),
            Some(("s3", rest)) => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(location)
                    .build()
                    .map_err(|e| Error::State(format!("the state location {location}: {e}")))?;
                let prefix = rest
                    .split_once('/')
                    .map_or("", |(_, p)| p)
                    .trim_matches('/');
                Ok(StateStore {
                    store: Arc::new(store),
                    root: StorePath::from(prefix),
                    location: location.trim_end_matches('/').to_string(),
                    service: service.to_string(),
                })
            }
            Some((scheme, _)) => Err(Error::State(format!(
                "the state location {location}: {scheme}:// is not supported; give a local \
                 directory or an s3://bucket/prefix URL"
            ))),
        }
    }

    /// Checkpoints under the local directory `dir`, for `service`. Nothing is created until a
    /// query checkpoints, so a process without stateful queries leaves no directory behind.
    pub fn local(dir: &Path, service: &str) -> Result<StateStore> {
        let absolute = std::path::absolute(dir)
            .map_err(|e| Error::State(format!("the state directory {}: {e}", dir.display())))?;
        // `a/../b` is `b` (object_store refuses `..`); the directory may not exist yet, so
        // this is done on the text, not by canonicalising.
        let mut normal = std::path::PathBuf::new();
        for part in absolute.components() {
            match part {
                std::path::Component::ParentDir => {
                    normal.pop();
                }
                std::path::Component::CurDir => {}
                other => normal.push(other),
            }
        }
        let absolute = normal;
        let root = StorePath::from_absolute_path(&absolute)
            .map_err(|e| Error::State(format!("the state directory {}: {e}", dir.display())))?;
        Ok(StateStore {
            store: Arc::new(LocalFileSystem::new()),
            root,
            location: dir.display().to_string(),
            service: service.to_string(),
        })
    }

    /// The checkpoints of query `id`, which runs `statement` (its text and its source's, so a
    /// changed query never picks up state it did not build).
    pub(crate) fn query(&self, id: &str, statement: &str) -> QueryState {
        QueryState {
            store: self.store.clone(),
            prefix: self.root.clone().join(self.service.as_str()).join(id),
            location: format!("{}/{}/{id}", self.location, self.service),
            statement: statement.split_whitespace().collect::<Vec<_>>().join(" "),
            next: 0,
        }
    }
}

/// One query's checkpoints.
#[derive(Debug)]
pub(crate) struct QueryState {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    location: String,
    /// The statement, whitespace collapsed, that every checkpoint here must have been written by.
    statement: String,
    /// Sequence number of the next checkpoint.
    next: u64,
}

impl QueryState {
    /// The checkpoints of the query's state for input partition `partition` alone.
    pub(crate) fn partition(&self, partition: i32) -> QueryState {
        QueryState {
            store: self.store.clone(),
            prefix: self.prefix.clone().join(partition.to_string()),
            location: format!("{}/{partition}", self.location),
            statement: self.statement.clone(),
            next: 0,
        }
    }

    /// Whether checkpoints lie directly here, not in the directories of partitions: the state
    /// of all partitions in one, as a query keeps it that is not split by partition.
    pub(crate) async fn holds_whole_state(&self) -> Result<bool> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| self.error("listing", e))?;
        Ok(listed
            .objects
            .iter()
            .any(|m| m.location.filename().is_some_and(|f| f.ends_with(".ckpt"))))
    }

    /// Where its checkpoints are, for messages.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// The checkpoints there, oldest first.
    async fn list(&self) -> Result<Vec<(u64, StorePath)>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| self.error("listing", e))?;
        let mut found: Vec<(u64, StorePath)> = listed
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let seq = name.strip_suffix(".ckpt")?.parse().ok()?;
                Some((seq, m.location))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// The newest intact checkpoint, falling back past corrupt ones (each reported); `None`
    /// when there is none at all. Fails when every checkpoint there is corrupt: starting empty
    /// would silently lose the state the committed offsets assume.
    pub(crate) async fn load(&mut self) -> Result<Option<Checkpoint>> {
        let found = self.list().await?;
        self.next = found.last().map_or(0, |(seq, _)| seq + 1);
        let mut problems = Vec::new();
        for (_, path) in found.iter().rev() {
            let shown = format!("{}/{}", self.location, path.filename().unwrap_or_default());
            let bytes = self
                .store
                .get(path)
                .await
                .map_err(|e| self.error("reading", e))?
                .bytes()
                .await
                .map_err(|e| self.error("reading", e))?;
            match Checkpoint::decode(&bytes) {
                Ok(checkpoint) => {
                    for p in &problems {
                        tracing::error!("{p}; fell back to the checkpoint {shown}");
                    }
                    let written_by = checkpoint.meta.get("statement").and_then(Value::as_str);
                    if written_by != Some(self.statement.as_str()) {
                        return Err(Error::State(format!(
                            "the checkpoints in {} were written by another statement ({}), not \
                             by {}. Move {} away to start this query over, or give this \
                             deployment another --service-id",
                            self.location,
                            written_by.unwrap_or("unknown"),
                            self.statement,
                            self.location
                        )));
                    }
                    return Ok(Some(checkpoint));
                }
                Err(e) => problems.push(format!("checkpoint {shown} is unusable: {e}")),
            }
        }
        if problems.is_empty() {
            return Ok(None);
        }
        Err(Error::State(format!(
            "{}; no earlier checkpoint is intact. Move {} away to start this query over \
             from its committed offsets",
            problems.join("; "),
            self.location
        )))
    }

    /// Writes `checkpoint` as the newest, then drops all but the newest [`KEEP`].
    pub(crate) async fn save(&mut self, checkpoint: &mut Checkpoint) -> Result<()> {
        checkpoint
            .meta
            .insert("statement".into(), json!(self.statement));
        let bytes = checkpoint.encode()?;
        let path = self.prefix.clone().join(format!("{:020}.ckpt", self.next));
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("writing", e))?;
        self.next += 1;
        let found = self.list().await?;
        for (_, old) in found.iter().rev().skip(KEEP) {
            if let Err(e) = self.store.delete(old).await {
                tracing::warn!("removing the old checkpoint {}: {e}", self.location);
            }
        }
        Ok(())
    }

    fn error(&self, what: &str, e: object_store::Error) -> Error {
        Error::State(format!("{what} checkpoints in {}: {e}", self.location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn state_locations_are_directories_or_s3_urls() {
        let e = StateStore::open("gs://b", "svc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "state: the state location gs://b: gs:// is not supported; give a local directory \
             or an s3://bucket/prefix URL"
        );
        let s3 = StateStore::open("s3://bucket/pre/fix/", "svc").unwrap();
        assert_eq!(s3.root.as_ref(), "pre/fix");
        assert_eq!(s3.query("Q", "x").location(), "s3://bucket/pre/fix/svc/Q");
        let local = StateStore::open("file:///tmp/eddy-x/../state", "svc").unwrap();
        assert_eq!(local.root.as_ref(), "tmp/state");
    }

    fn sample() -> Checkpoint {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![Some(3), None])),
            ],
        )
        .unwrap();
        let mut c = Checkpoint::default();
        c.offsets.insert(0, 42);
        c.offsets.insert(2, 7);
        c.meta.insert("stream_time".into(), json!(1000));
        c.sections.insert("groups".into(), batch);
        c
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let bytes = sample().encode().unwrap();
        let back = Checkpoint::decode(&bytes).unwrap();
        assert_eq!(back.offsets, sample().offsets);
        assert_eq!(back.meta["stream_time"], json!(1000));
        assert_eq!(back.sections["groups"], sample().sections["groups"]);

        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(
            Checkpoint::decode(&flipped).unwrap_err(),
            "checksum mismatch: the file is truncated or corrupt"
        );
        assert_eq!(
            Checkpoint::decode(&bytes[..bytes.len() / 2]).unwrap_err(),
            "checksum mismatch: the file is truncated or corrupt"
        );
        assert_eq!(
            Checkpoint::decode(&bytes[..10]).unwrap_err(),
            "not a checkpoint, or truncated (10 bytes)"
        );
    }

    #[tokio::test]
    async fn keeps_two_and_falls_back_past_a_corrupt_newest() {
        let dir = std::env::temp_dir().join(format!("eddy-ckpt-{}", std::process::id()));
        let store = StateStore::local(&dir, "svc").unwrap();
        let statement = "CREATE TABLE t AS SELECT k, COUNT(*) AS n FROM s GROUP BY k;";
        let mut q = store.query("CTAS_T_0", statement);
        assert!(q.load().await.unwrap().is_none());
        for offset in [10, 20, 30] {
            let mut c = sample();
            c.offsets.insert(0, offset);
            q.save(&mut c).await.unwrap();
        }
        let files = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir.join("svc/CTAS_T_0"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            files(&dir),
            ["00000000000000000001.ckpt", "00000000000000000002.ckpt"]
        );
        let mut again = store.query("CTAS_T_0", statement);
        assert_eq!(again.load().await.unwrap().unwrap().offsets[&0], 30);

        // Another statement under the same query id does not get this state.
        let e = store
            .query(
                "CTAS_T_0",
                "CREATE TABLE t AS SELECT k, SUM(v) AS n FROM s GROUP BY k;",
            )
            .load()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("were written by another statement (CREATE TABLE t AS SELECT k, COUNT(*) AS n FROM s GROUP BY k;), not by CREATE TABLE t AS SELECT k, SUM(v)"), "{e}");

        // The newest cut short (as a full disk would leave it): the one before is used.
        let newest = dir.join("svc/CTAS_T_0/00000000000000000002.ckpt");
        let bytes = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &bytes[..bytes.len() - 100]).unwrap();
        let mut again = store.query("CTAS_T_0", statement);
        assert_eq!(again.load().await.unwrap().unwrap().offsets[&0], 20);

        // Both damaged: a clear error, not an empty start.
        std::fs::write(dir.join("svc/CTAS_T_0/00000000000000000001.ckpt"), b"junk").unwrap();
        let e = store
            .query("CTAS_T_0", statement)
            .load()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "state: checkpoint {}/svc/CTAS_T_0/00000000000000000002.ckpt is unusable: \
                 checksum mismatch",
                dir.display()
            )),
            "{e}"
        );
        assert!(
            e.ends_with("start this query over from its committed offsets"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
