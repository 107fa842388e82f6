//! An aggregation's groups and their state, in Arrow columns: each group's state is one row
//! (its GROUP BY values, then each aggregate's `state()` fields, DataFusion's partial-aggregate
//! layout). A batch appends the new state of the groups it changed as one chunk and the stale
//! rows are compacted away later, so updating, emitting and checkpointing groups are column
//! operations over the groups touched, not a call per group.

use foldhash::HashMap;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;

use crate::window::WindowId;
use crate::Result;

/// A group's number while it lives (numbers are reused after it is gone).
pub(super) type GroupId = u32;

/// What is known of one group besides its state row.
pub(super) struct Meta {
    /// The window it is in.
    pub(super) window: WindowId,
    /// Its GROUP BY values, row-encoded (empty without GROUP BY).
    pub(super) key: Box<[u8]>,
    /// Where its state row is: chunk, row.
    at: (u32, u32),
    /// The window bounds of the row it last emitted as a change, while that row stands.
    pub(super) emitted: Option<(i64, i64)>,
    /// Whether it changed since changes were last emitted.
    pub(super) changed: bool,
}

/// Every group of an aggregation, by window and key, with its state rows.
pub(super) struct Groups {
    /// The state rows' schema.
    schema: SchemaRef,
    /// Window bounds (16 bytes) then key bytes, to the group.
    index: HashMap<Vec<u8>, GroupId>,
    metas: Vec<Option<Meta>>,
    /// Numbers free for new groups.
    free: Vec<GroupId>,
    /// Numbers released since the last [`Groups::recycle`]: not reused before then, so a list
    /// of changed groups never names a new group by an old one's number.
    released: Vec<GroupId>,
    windows: HashMap<WindowId, Vec<GroupId>>,
    chunks: Vec<RecordBatch>,
    /// Rows in `chunks`, stale ones included.
    rows: usize,
    live: usize,
    scratch: Vec<u8>,
}

/// Compacting keeps stale rows under half of all rows, past this many.
const COMPACT_AFTER: usize = 4096;

impl Groups {
    /// No groups, with state rows of `schema`.
    pub(super) fn new(schema: SchemaRef) -> Groups {
        Groups {
            schema,
            index: HashMap::default(),
            metas: Vec::new(),
            free: Vec::new(),
            released: Vec::new(),
            windows: HashMap::default(),
            chunks: Vec::new(),
            rows: 0,
            live: 0,
            scratch: Vec::new(),
        }
    }

    /// The state rows' schema.
    pub(super) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Whether it holds no group.
    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn index_key(&mut self, window: WindowId, key: &[u8]) -> &[u8] {
        index_key(&mut self.scratch, window, key)
    }

    /// The group of `key` in `window`, if there is one.
    pub(super) fn lookup(&mut self, window: WindowId, key: &[u8]) -> Option<GroupId> {
        self.index
            .get(index_key(&mut self.scratch, window, key))
            .copied()
    }

    /// A new group of `key` in `window`, without a state row until [`Groups::append`].
    pub(super) fn insert(&mut self, window: WindowId, key: &[u8]) -> GroupId {
        let meta = Meta {
            window,
            key: key.into(),
            at: (u32::MAX, 0),
            emitted: None,
            changed: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.metas[id as usize] = Some(meta);
                id
            }
            None => {
                self.metas.push(Some(meta));
                (self.metas.len() - 1) as GroupId
            }
        };
        let k = self.index_key(window, key).to_vec();
        self.index.insert(k, id);
        self.windows.entry(window).or_default().push(id);
        self.live += 1;
        id
    }

    /// Group `id`, if it lives.
    pub(super) fn meta(&self, id: GroupId) -> Option<&Meta> {
        self.metas.get(id as usize).and_then(Option::as_ref)
    }

    /// Group `id`, if it lives.
    pub(super) fn meta_mut(&mut self, id: GroupId) -> Option<&mut Meta> {
        self.metas.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn at(&self, id: GroupId) -> (usize, usize) {
        let meta = self.meta(id).expect("a live group");
        (meta.at.0 as usize, meta.at.1 as usize)
    }

    /// Makes row `i` of `chunk` the state row of `ids[i]`.
    pub(super) fn append(&mut self, chunk: RecordBatch, ids: &[GroupId]) -> Result<()> {
        debug_assert_eq!(chunk.num_rows(), ids.len());
        let c = self.chunks.len() as u32;
        for (row, &id) in ids.iter().enumerate() {
            let meta = self.meta_mut(id).expect("a live group");
            meta.at = (c, row as u32);
        }
        self.rows += chunk.num_rows();
        self.chunks.push(chunk);
        if self.rows > COMPACT_AFTER && self.rows > 2 * self.live {
            self.compact()?;
        }
        Ok(())
    }

    /// The state rows of `ids`, in that order, as columns of [`Groups::schema`].
    pub(super) fn rows(&self, ids: &[GroupId]) -> Result<Vec<ArrayRef>> {
        if self.chunks.is_empty() {
            // No group yet (a partition that has seen no event): empty columns.
            debug_assert!(ids.is_empty());
            return Ok(self
                .schema
                .fields()
                .iter()
                .map(|f| arrow::array::new_empty_array(f.data_type()))
                .collect());
        }
        if let [only] = &self.chunks[..] {
            let rows = UInt32Array::from_iter_values(ids.iter().map(|&id| self.at(id).1 as u32));
            return Ok(arrow::compute::take_arrays(only.columns(), &rows, None)?);
        }
        let at: Vec<(usize, usize)> = ids.iter().map(|&id| self.at(id)).collect();
        (0..self.schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    self.chunks.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(arrow::compute::interleave(&arrays, &at)?)
            })
            .collect()
    }

    /// Removes window `window`'s list of groups and returns it; the groups live on until
    /// [`Groups::release`]d or [`Groups::rekey`]ed.
    pub(super) fn take_window(&mut self, window: WindowId) -> Vec<GroupId> {
        self.windows.remove(&window).unwrap_or_default()
    }

    /// Moves group `id` (taken from its window) to `window`.
    pub(super) fn rekey(&mut self, id: GroupId, window: WindowId) {
        let meta = self.metas[id as usize].as_mut().expect("a live group");
        let old = meta.window;
        meta.window = window;
        let key = meta.key.clone();
        let k = self.index_key(old, &key).to_vec();
        self.index.remove(&k);
        let k = self.index_key(window, &key).to_vec();
        self.index.insert(k, id);
        self.windows.entry(window).or_default().push(id);
    }

    /// Drops group `id` (taken from its window).
    pub(super) fn release(&mut self, id: GroupId) {
        let Some(meta) = self.metas[id as usize].take() else {
            return;
        };
        let k = self.index_key(meta.window, &meta.key).to_vec();
        self.index.remove(&k);
        self.released.push(id);
        self.live -= 1;
    }

    /// Lets new groups take the numbers released so far.
    pub(super) fn recycle(&mut self) {
        self.free.append(&mut self.released);
    }

    /// The live groups, in number order.
    pub(super) fn ids(&self) -> Vec<GroupId> {
        (0..self.metas.len() as GroupId)
            .filter(|&id| self.meta(id).is_some())
            .collect()
    }

    /// Rewrites the live groups' state rows as one chunk.
    fn compact(&mut self) -> Result<()> {
        let ids = self.ids();
        let columns = self.rows(&ids)?;
        let chunk = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(ids.len())),
        )?;
        self.chunks.clear();
        self.rows = 0;
        self.append(chunk, &ids)
    }
}

/// `window` and `key` as one index key, written into `scratch`.
fn index_key<'a>(scratch: &'a mut Vec<u8>, window: WindowId, key: &[u8]) -> &'a [u8] {
    scratch.clear();
    scratch.extend_from_slice(&window.0.to_le_bytes());
    scratch.extend_from_slice(&window.1.to_le_bytes());
    scratch.extend_from_slice(key);
    scratch
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn chunk(schema: &SchemaRef, values: impl IntoIterator<Item = i64>) -> RecordBatch {
        let values: ArrayRef = Arc::new(Int64Array::from_iter_values(values));
        RecordBatch::try_new(schema.clone(), vec![values]).unwrap()
    }

    fn values(groups: &Groups, ids: &[GroupId]) -> Vec<i64> {
        let rows = groups.rows(ids).unwrap();
        rows[0].as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn state_rows_survive_updates_compaction_and_moves() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let mut groups = Groups::new(schema.clone());
        let ids: Vec<GroupId> = (0..3000u32)
            .map(|k| groups.insert((0, 10), &k.to_be_bytes()))
            .collect();
        groups.append(chunk(&schema, 0..3000), &ids).unwrap();
        // Every update rewrites the even groups: stale rows pile up until compaction.
        let even: Vec<GroupId> = ids.iter().copied().step_by(2).collect();
        for round in 1..=4i64 {
            groups
                .append(chunk(&schema, (0..1500).map(|i| round * 10_000 + i)), &even)
                .unwrap();
        }
        assert!(
            groups.chunks.len() < 5,
            "compacted: {}",
            groups.chunks.len()
        );
        assert_eq!(
            values(&groups, &[ids[0], ids[1], ids[2998], ids[2999]]),
            [40_000, 1, 41_499, 2999]
        );
        assert_eq!(groups.lookup((0, 10), &7u32.to_be_bytes()), Some(ids[7]));

        // A session moves: its key is found under the new window only.
        assert_eq!(groups.take_window((0, 10)).len(), 3000);
        groups.rekey(ids[7], (0, 20));
        assert_eq!(groups.lookup((0, 10), &7u32.to_be_bytes()), None);
        assert_eq!(groups.lookup((0, 20), &7u32.to_be_bytes()), Some(ids[7]));

        // A released number is reused only after recycling.
        groups.release(ids[8]);
        let new = groups.insert((0, 20), b"new");
        assert_ne!(new, ids[8]);
        groups.recycle();
        assert_eq!(groups.insert((0, 20), b"newer"), ids[8]);
        assert_eq!(groups.lookup((0, 10), &8u32.to_be_bytes()), None);
    }
}
