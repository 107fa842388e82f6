//! Joins of two tables on their primary keys, as ksqlDB joins them: a change of either table
//! joins its key's rows again, and the result replaces that key's row of the output, or
//! deletes it when the join no longer yields one.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, SetExpr, Statement as SqlStatement,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::checkpoint::Checkpoint;
use crate::provider::{Slot, TableState};
use crate::query::{Parsed, HIDDEN};
use crate::{Error, Result};

/// Both tables' rows, and the slots the join plan reads them from.
pub(crate) struct TableJoin {
    /// Each table's rows: the source's, then the joined table's.
    sides: [Arc<TableState>; 2],
    /// What the plan reads: each table's rows of the keys that changed.
    slots: [Arc<Slot>; 2],
    /// Each table's key column.
    keys: [usize; 2],
    /// Which rows the join keeps.
    kind: Kind,
    /// For a foreign-key join, the source's column that holds the joined table's key: the
    /// output is keyed by the source's key, and a change of the joined table joins again every
    /// source row that names it.
    foreign: Option<usize>,
    /// For a foreign-key join: per joined-table key (encoded), the keys of the source rows
    /// that name it, so that a change of the joined table finds them without a scan.
    named_by: std::sync::Mutex<foldhash::HashMap<Vec<u8>, foldhash::HashSet<Vec<u8>>>>,
}

/// The kinds of table–table join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inner,
    Left,
    Full,
}

/// A planned table–table join.
pub(crate) struct Planned {
    /// Its state.
    pub join: TableJoin,
    /// The user's query over the two slots.
    pub plan: LogicalPlan,
    /// Whether `rowtime` is in the output only because the engine added it.
    pub appended_rowtime: bool,
}

/// Plans `parsed`, a join of two tables (`schemas`: their decoded rows, `rowtime` last), on
/// their primary keys; registers the slots it reads in `tables`.
pub(crate) async fn plan(
    ctx: &SessionContext,
    parsed: &Parsed,
    schemas: [SchemaRef; 2],
    id: &str,
    tables: &mut Vec<String>,
) -> Result<Planned> {
    let (Some(left), Some(right)) = (&parsed.changelog, &parsed.joined_changelog) else {
        return Err(Error::Plan(
            "a table–table join needs both tables' keys".into(),
        ));
    };
    let joined = &parsed.joined[0];
    if parsed.joined.len() != 1 || left.keys.len() != 1 || right.keys.len() != 1 {
        return Err(Error::Unsupported(format!(
            "joining table '{}' to '{joined}': a table–table join joins two tables, each with \
             one PRIMARY KEY column",
            parsed.source
        )));
    }
    if parsed.grouped || parsed.window.is_some() {
        return Err(Error::Unsupported(
            "aggregating a table–table join: write the join to a table (CREATE TABLE … AS), \
             then aggregate that table"
                .into(),
        ));
    }
    let keys = [
        schemas[0].index_of(&left.keys[0])?,
        schemas[1].index_of(&right.keys[0])?,
    ];
    let types = [0, 1].map(|s| schemas[s].field(keys[s]).data_type().clone());
    let names = [
        format!("__eddy_{}_left", id.to_lowercase()),
        format!("__eddy_{}_right", id.to_lowercase()),
    ];
    let slots = [Slot::new(schemas[0].clone()), Slot::new(schemas[1].clone())];
    for (name, slot) in names.iter().zip(&slots) {
        ctx.register_table(name.as_str(), slot.clone())?;
        tables.push(name.clone());
    }
    let (sql, _) = parsed.table_join_sql(&names[0], &names[1], false)?;
    let (kind, foreign) = check_join(&sql, parsed, [&left.keys[0], &right.keys[0]], &schemas)?;
    let foreign = match foreign {
        None if types[0] != types[1] => {
            return Err(Error::Plan(format!(
                "Invalid join condition: the PRIMARY KEYs of '{}' ({}) and '{joined}' ({}) have \
                 different types",
                parsed.source, types[0], types[1]
            )))
        }
        None => None,
        Some(column) => {
            let at = schemas[0]
                .fields()
                .iter()
                .position(|f| f.name().to_lowercase() == column)
                .ok_or_else(|| {
                    Error::Plan(format!("'{column}' is not a column of '{}'", parsed.source))
                })?;
            let found = schemas[0].field(at).data_type();
            if *found != types[1] {
                return Err(Error::Plan(format!(
                    "Invalid join condition: foreign-key table-table joins are not supported \
                     when the foreign key ('{column}', {found}) and the joined table's PRIMARY \
                     KEY ({}) have different types",
                    types[1]
                )));
            }
            Some(at)
        }
    };
    let (sql, appended_rowtime) = parsed.table_join_sql(&names[0], &names[1], foreign.is_some())?;
    let plan = ctx
        .sql(&sql)
        .await
        .map_err(crate::pipeline::plan_error)?
        .into_unoptimized_plan();
    let plan = crate::type_check::check(plan)?;
    Ok(Planned {
        join: TableJoin {
            sides: [
                TableState::new(schemas[0].clone(), vec![keys[0]]),
                TableState::new(schemas[1].clone(), vec![keys[1]]),
            ],
            slots,
            keys,
            kind,
            foreign,
            named_by: Default::default(),
        },
        plan,
        appended_rowtime,
    })
}

/// Refuses joins other than `[INNER] | LEFT [OUTER] | FULL [OUTER] JOIN … ON a.key = b.key`
/// over the two tables' keys, as ksqlDB's primary-key joins. A column named without its table
/// is the column of whichever table (of `schemas`) alone has it, as in ksqlDB.
fn check_join(
    sql: &str,
    parsed: &Parsed,
    keys: [&String; 2],
    schemas: &[SchemaRef; 2],
) -> Result<(Kind, Option<String>)> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Error::Plan(format!("rewriting the join: {e}")))?;
    let Some(SqlStatement::Query(query)) = statements.first() else {
        return Err(Error::Plan("rewriting the join: not a query".into()));
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(Error::Plan("rewriting the join: not a SELECT".into()));
    };
    let join = &select.from[0].joins[0];
    let (kind, on) = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (Kind::Inner, c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (Kind::Left, c),
        JoinOperator::FullOuter(c) => (Kind::Full, c),
        _ => {
            return Err(Error::Unsupported(
                "this kind of table–table join: use [INNER] JOIN, LEFT [OUTER] JOIN or FULL \
                 [OUTER] JOIN (for RIGHT JOIN, swap the tables and use LEFT JOIN)"
                    .into(),
            ))
        }
    };
    // Each side of the equality as (relation, column), lower case.
    let aliases = [
        parsed
            .alias
            .clone()
            .unwrap_or_else(|| parsed.source.clone())
            .to_lowercase(),
        parsed.joined_aliases[0].to_lowercase(),
    ];
    let column = |e: &Expr| match e {
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [relation, column] => {
                let relation = relation.value.to_lowercase();
                let side = aliases.iter().position(|a| *a == relation)?;
                Some((side, column.value.to_lowercase()))
            }
            _ => None,
        },
        Expr::Identifier(ident) => {
            let name = ident.value.to_lowercase();
            let has = |s: usize| {
                schemas[s]
                    .fields()
                    .iter()
                    .any(|f| f.name() != "rowtime" && f.name().to_lowercase() == name)
            };
            match (has(0), has(1)) {
                (true, false) => Some((0, name)),
                (false, true) => Some((1, name)),
                _ => None,
            }
        }
        _ => None,
    };
    let sides = match on {
        JoinConstraint::On(Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        }) => match (column(left), column(right)) {
            (Some(a), Some(b)) if a.0 == 0 && b.0 == 1 => Some((a.1, b.1)),
            (Some(a), Some(b)) if a.0 == 1 && b.0 == 0 => Some((b.1, a.1)),
            _ => None,
        },
        _ => None,
    };
    let keys = keys.map(|k| k.to_lowercase());
    match sides {
        Some((l, r)) if l == keys[0] && r == keys[1] => Ok((kind, None)),
        // A foreign-key join: a column of the source names the joined table's key.
        Some((l, r)) if r == keys[1] && kind != Kind::Full => Ok((kind, Some(l))),
        Some((_, r)) if r == keys[1] => Err(Error::Unsupported(
            "a FULL OUTER foreign-key join: foreign-key joins are INNER or LEFT, as in ksqlDB"
                .into(),
        )),
        _ => Err(Error::Unsupported(format!(
            "this table–table join condition: join '{}' and '{}' on '{}''s PRIMARY KEY, with \
             a.{} = b.{} (a primary-key join) or a.column = b.{} (a foreign-key join), a and b \
             the two tables' names or aliases",
            parsed.source, parsed.joined[0], parsed.joined[0], keys[0], keys[1], keys[1]
        ))),
    }
}

impl TableJoin {
    /// Applies `batch`, changes of table `side`, and fills the slots with both tables' rows of
    /// the keys it changed. Returns those keys, each once, with the row each first appears in.
    pub(crate) fn apply(&self, batch: &RecordBatch, side: usize) -> Result<Changed> {
        if let Some(fk) = self.foreign {
            return self.apply_foreign(batch, side, fk);
        }
        let mut seen = foldhash::HashSet::default();
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        // As Kafka Streams joins tables, a change whose key the other table must have, and
        // does not, changes nothing: its key has no row in the output, before or after.
        let other = &self.sides[1 - side];
        let needs_other = match self.kind {
            Kind::Inner => true,
            Kind::Left => side == 1,
            Kind::Full => false,
        };
        for (i, key) in self.sides[side].keys_of(batch)?.into_iter().enumerate() {
            if let Some(key) = key {
                if (!needs_other || other.contains(&key)) && seen.insert(key.clone()) {
                    keys.push(key);
                    rows.push(i as u32);
                }
            }
        }
        self.sides[side].upsert(batch)?;
        for (slot, table) in self.slots.iter().zip(&self.sides) {
            slot.set(vec![table.rows_of(keys.iter().map(Vec::as_slice))?]);
        }
        let values = arrow::compute::take(
            batch.column(self.keys[side]),
            &UInt32Array::from(rows),
            None,
        )?;
        Ok(Changed { keys, values })
    }

    /// [`TableJoin::apply`] for a foreign-key join on the source's column `fk`. A change of
    /// the source joins its rows again; a change of the joined table joins again the source's
    /// rows that name the keys it changed, found in `named_by`. Either way the output keys are
    /// the source's.
    fn apply_foreign(&self, batch: &RecordBatch, side: usize, fk: usize) -> Result<Changed> {
        let [source, joined] = &self.sides;
        let (rows, changed) = if side == 0 {
            // Every key the batch changed, deleted ones included: their rows may leave.
            let mut seen = foldhash::HashSet::default();
            let mut keys = Vec::new();
            let mut first = Vec::new();
            for (i, key) in source.keys_of(batch)?.into_iter().enumerate() {
                if let Some(key) = key {
                    if seen.insert(key.clone()) {
                        keys.push(key);
                        first.push(i as u32);
                    }
                }
            }
            let before = source.rows_of(keys.iter().map(Vec::as_slice))?;
            self.index(&before, fk, false)?;
            source.upsert(batch)?;
            let values =
                arrow::compute::take(batch.column(self.keys[0]), &UInt32Array::from(first), None)?;
            let rows = source.rows_of(keys.iter().map(Vec::as_slice))?;
            self.index(&rows, fk, true)?;
            (rows, Changed { keys, values })
        } else {
            let changed: Vec<Vec<u8>> = joined.keys_of(batch)?.into_iter().flatten().collect();
            joined.upsert(batch)?;
            // In key order, so that the output's order does not depend on hashing.
            let naming: std::collections::BTreeSet<Vec<u8>> = {
                let named_by = self.named_by.lock().expect("index lock");
                changed
                    .iter()
                    .filter_map(|k| named_by.get(k))
                    .flatten()
                    .cloned()
                    .collect()
            };
            let rows = source.rows_of(naming.iter().map(Vec::as_slice))?;
            let keys = source.keys_of(&rows)?.into_iter().flatten().collect();
            let values = rows.column(self.keys[0]).clone();
            (rows, Changed { keys, values })
        };
        let named: Vec<Vec<u8>> = joined
            .encode(rows.column(fk))?
            .into_iter()
            .flatten()
            .collect();
        self.slots[1].set(vec![joined.rows_of(named.iter().map(Vec::as_slice))?]);
        self.slots[0].set(vec![rows]);
        Ok(changed)
    }

    /// Adds (`add`) or removes the source `rows` to or from the index of the keys their
    /// column `fk` names.
    fn index(&self, rows: &RecordBatch, fk: usize, add: bool) -> Result<()> {
        let named = self.sides[1].encode(rows.column(fk))?;
        let keys = self.sides[0].keys_of(rows)?;
        let mut named_by = self.named_by.lock().expect("index lock");
        for (named, key) in named.into_iter().zip(keys) {
            let (Some(named), Some(key)) = (named, key) else {
                continue;
            };
            if add {
                named_by.entry(named).or_default().insert(key);
            } else if let Some(keys) = named_by.get_mut(&named) {
                keys.remove(&key);
                if keys.is_empty() {
                    named_by.remove(&named);
                }
            }
        }
        Ok(())
    }

    /// Empties the slots once the plan has run.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.set(Vec::new());
        }
    }

    /// Tombstones, in `full` (the output's columns), for the keys in `changed` that the join's
    /// output `out` (in `full` too) has no row for.
    pub(crate) fn deleted(
        &self,
        out: &[RecordBatch],
        changed: &Changed,
        full: &SchemaRef,
    ) -> Result<Option<RecordBatch>> {
        let at = full.index_of(&format!("{HIDDEN}k0"))?;
        let key_type = changed.values.data_type().clone();
        let converter = RowConverter::new(vec![SortField::new(key_type.clone())])?;
        let mut found = foldhash::HashSet::default();
        for batch in out {
            let column = arrow::compute::cast(batch.column(at), &key_type)?;
            let rows = converter.convert_columns(&[column])?;
            found.extend(rows.iter().map(|r| r.as_ref().to_vec()));
        }
        let gone: Vec<u32> = changed
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| !found.contains(*k))
            .map(|(i, _)| i as u32)
            .collect();
        if gone.is_empty() {
            return Ok(None);
        }
        let n = gone.len();
        let keys = arrow::compute::take(&changed.values, &UInt32Array::from(gone), None)?;
        let columns: Vec<ArrayRef> = full
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                Ok(if i == at {
                    arrow::compute::cast(&keys, field.data_type())?
                } else if i == full.fields().len() - 1 {
                    Arc::new(BooleanArray::from(vec![true; n])) as ArrayRef
                } else {
                    arrow::array::new_null_array(field.data_type(), n)
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(RecordBatch::try_new(full.clone(), columns)?))
    }

    /// Adds both tables' rows to `checkpoint`.
    pub(crate) fn save(&self, checkpoint: &mut Checkpoint) -> Result<()> {
        self.sides[0].save("left", checkpoint)?;
        self.sides[1].save("right", checkpoint)
    }

    /// Restores what [`TableJoin::save`] wrote.
    pub(crate) fn restore(&self, checkpoint: &Checkpoint) -> Result<()> {
        self.sides[0].restore("left", checkpoint)?;
        self.sides[1].restore("right", checkpoint)?;
        if let Some(fk) = self.foreign {
            self.named_by.lock().expect("index lock").clear();
            self.index(&self.sides[0].snapshot()?, fk, true)?;
        }
        Ok(())
    }
}

/// The keys a batch changed, each once: encoded, and their values.
pub(crate) struct Changed {
    keys: Vec<Vec<u8>>,
    values: ArrayRef,
}
