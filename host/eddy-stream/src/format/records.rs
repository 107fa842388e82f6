//! How a stream's rows become Kafka records, the way its decoder reads them back: with a
//! `key_format`, the `KEY` columns are the record key and the value holds the rest; without
//! one, the value holds every column.

use arrow::array::RecordBatch;
use eddy_connector::Record;

use super::{KeyFormat, ValueFormat};
use crate::Result;

/// The record layout of one stream: which columns go to the key, in which format. The default
/// is JSON values without a key.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamRecords {
    /// The value format.
    pub value: ValueFormat,
    /// The key format and the key columns' positions, when records are keyed.
    pub key: Option<(KeyFormat, Vec<usize>)>,
}

impl StreamRecords {
    /// Records without a key, every column in the value.
    pub(crate) fn plain(value: ValueFormat) -> StreamRecords {
        StreamRecords { value, key: None }
    }

    /// Encodes rows of the stream's schema (`rowtime` last, which becomes the record
    /// timestamp).
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Vec<Record>> {
        let Some((format, keys)) = &self.key else {
            return self.value.encode(batch);
        };
        let values: Vec<usize> = (0..batch.num_columns())
            .filter(|i| !keys.contains(i))
            .collect();
        let mut records = self.value.encode(&batch.project(&values)?)?;
        let key_bytes = format.encode(&batch.project(keys)?)?;
        for (record, key) in records.iter_mut().zip(key_bytes) {
            record.key = Some(key);
        }
        Ok(records)
    }
}

impl StreamRecords {
    /// The layout of a relation with these `options` and key columns (`keys`, by name).
    pub(crate) fn of(
        options: &eddy_connector::Options,
        schema: &arrow::datatypes::Schema,
        keys: &[String],
    ) -> Result<StreamRecords> {
        let key = match KeyFormat::from_options(options)? {
            Some(format) if format != KeyFormat::None && !keys.is_empty() => {
                let positions = keys
                    .iter()
                    .map(|k| schema.index_of(k))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Some((format, positions))
            }
            _ => None,
        };
        Ok(StreamRecords {
            value: ValueFormat::from_options(options)?,
            key,
        })
    }
}
