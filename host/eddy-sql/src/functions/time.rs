//! Date and time functions with Java (`DateTimeFormatter`) patterns, as ksqlDB takes them:
//! `PARSE_TIMESTAMP`, `FORMAT_TIMESTAMP`, `PARSE_DATE`, `FORMAT_DATE`, `PARSE_TIME`,
//! `FORMAT_TIME`, `UNIX_TIMESTAMP`, and ksqlDB's older forms over numbers:
//! `STRINGTOTIMESTAMP` and `TIMESTAMPTOSTRING` (milliseconds since the epoch as a `BIGINT`),
//! `STRINGTODATE` and `DATETOSTRING` (days as an `INTEGER`);
//! `UNIX_DATE` and `FROM_DAYS` go between days and `DATE`; `TIMESTAMPADD(unit, n, ts)` and
//! `TIMESTAMPSUB(unit, n, ts)` move a `TIMESTAMP`, `DATEADD`/`DATESUB` a `DATE` and
//! `TIMEADD`/`TIMESUB` a `TIME` (the unit a keyword, quoted by [`quote_time_units`] before
//! parsing); `CONVERT_TZ(ts, from, to)` moves a `TIMESTAMP` between time zones.
//! Times are UTC (but for `CONVERT_TZ`'s zones); a value that does not match its pattern, or an
//! unknown zone, is null (ksqlDB logs it, and nulls it).

use std::sync::Arc;

use chrono::format::{Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int32Array, Int64Array, StringArray,
    Time32MillisecondArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Time32MillisecondType, TimeUnit, TimestampMillisecondType,
};
use datafusion::arrow::temporal_conversions::{time32ms_to_time, time_to_time32ms};
use datafusion::common::Result;
use datafusion::logical_expr::{Signature, TypeSignature, Volatility};

use super::scalar::{returns, Ksql};
use super::string::{ints, strings};

const S: DataType = DataType::Utf8;
const TS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);
const DATE: DataType = DataType::Date32;
const TIME: DataType = DataType::Time32(TimeUnit::Millisecond);
/// Milliseconds in a day: `DATEADD` counts whole ones, `TIMEADD` wraps around one.
const DAY_MILLIS: i64 = 86_400_000;

/// This family's functions.
pub(super) fn all() -> Vec<Ksql> {
    vec![
        Ksql::new("parse_timestamp", vec![vec![S, S]], returns!(TS), |a, _| {
            let out: TimestampMillisecondArray = per_row(a, parse_timestamp)?.into_iter().collect();
            Ok(Arc::new(out))
        }),
        Ksql::new(
            "format_timestamp",
            with_each_unit(&[S]),
            returns!(S),
            |a, _| {
                let times = cast(&a[0], &TS)?;
                let times = times.as_primitive::<TimestampMillisecondType>();
                let patterns = strings(&a[1])?;
                let out: StringArray = (0..times.len())
                    .map(|i| {
                        if times.is_null(i) || patterns.is_null(i) {
                            return None;
                        }
                        let t = DateTime::from_timestamp_millis(times.value(i))?;
                        format(t.naive_utc().format(&chrono_format(patterns.value(i))))
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new("parse_date", vec![vec![S, S]], returns!(DATE), |a, _| {
            let out: Date32Array = per_row(a, parse_date)?.into_iter().collect();
            Ok(Arc::new(out))
        }),
        Ksql::new("format_date", vec![vec![DATE, S]], returns!(S), |a, _| {
            format_dates(&cast(&a[0], &DATE)?, &a[1])
        }),
        Ksql::new("parse_time", vec![vec![S, S]], returns!(TIME), |a, _| {
            let out: Time32MillisecondArray = per_row(a, parse_time)?.into_iter().collect();
            Ok(Arc::new(out))
        }),
        Ksql::new(
            "format_time",
            with_each_time_unit(&[], &[S]),
            returns!(S),
            |a, _| {
                let times = cast(&a[0], &TIME)?;
                let times = times.as_primitive::<Time32MillisecondType>();
                let patterns = strings(&a[1])?;
                let out: StringArray = (0..times.len())
                    .map(|i| {
                        if times.is_null(i) || patterns.is_null(i) {
                            return None;
                        }
                        let t = time32ms_to_time(times.value(i))?;
                        format(t.format(&chrono_format(patterns.value(i))))
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "convert_tz",
            with_each_unit(&[S, S]),
            returns!(TS),
            |a, _| convert_tz(a),
        ),
        Ksql::new(
            "stringtotimestamp",
            vec![vec![S, S]],
            returns!(DataType::Int64),
            |a, _| {
                let out: Int64Array = per_row(a, parse_timestamp)?.into_iter().collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "timestamptostring",
            vec![vec![DataType::Int64, S], vec![DataType::Int32, S]],
            returns!(S),
            |a, _| {
                let millis = ints(&a[0])?;
                let patterns = strings(&a[1])?;
                let out: StringArray = (0..millis.len())
                    .map(|i| {
                        if millis.is_null(i) || patterns.is_null(i) {
                            return None;
                        }
                        let t = DateTime::from_timestamp_millis(millis.value(i))?;
                        format(t.naive_utc().format(&chrono_format(patterns.value(i))))
                    })
                    .collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "stringtodate",
            vec![vec![S, S]],
            returns!(DataType::Int32),
            |a, _| {
                let out: Int32Array = per_row(a, parse_date)?.into_iter().collect();
                Ok(Arc::new(out))
            },
        ),
        Ksql::new(
            "datetostring",
            vec![vec![DataType::Int32, S], vec![DataType::Int64, S]],
            returns!(S),
            |a, _| format_dates(&cast(&cast(&a[0], &DataType::Int32)?, &DATE)?, &a[1]),
        ),
        Ksql::with_signature(
            "unix_date",
            Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::Exact(vec![DATE])],
                Volatility::Volatile,
            ),
            returns!(DataType::Int32),
            |a, rows| {
                let Some(dates) = a.first() else {
                    let today = Date32Type::from_naive_date(chrono::Utc::now().date_naive());
                    return Ok(Arc::new(Int32Array::from(vec![today; rows])));
                };
                Ok(cast(&cast(dates, &DATE)?, &DataType::Int32)?)
            },
        ),
        Ksql::new(
            "from_days",
            vec![vec![DataType::Int32], vec![DataType::Int64]],
            returns!(DATE),
            |a, _| Ok(cast(&cast(&a[0], &DataType::Int32)?, &DATE)?),
        ),
        Ksql::new(
            "timestampadd",
            with_each_unit_after(&[S, DataType::Int64]),
            returns!(TS),
            |a, _| shift(a, 1),
        ),
        Ksql::new(
            "timestampsub",
            with_each_unit_after(&[S, DataType::Int64]),
            returns!(TS),
            |a, _| shift(a, -1),
        ),
        Ksql::new(
            "dateadd",
            vec![vec![S, DataType::Int64, DATE]],
            returns!(DATE),
            |a, _| shift_date(a, 1),
        ),
        Ksql::new(
            "datesub",
            vec![vec![S, DataType::Int64, DATE]],
            returns!(DATE),
            |a, _| shift_date(a, -1),
        ),
        Ksql::new(
            "timeadd",
            with_each_time_unit(&[S, DataType::Int64], &[]),
            returns!(TIME),
            |a, _| shift_time(a, 1),
        ),
        Ksql::new(
            "timesub",
            with_each_time_unit(&[S, DataType::Int64], &[]),
            returns!(TIME),
            |a, _| shift_time(a, -1),
        ),
        Ksql::with_signature(
            "unix_timestamp",
            Signature::one_of(
                std::iter::once(TypeSignature::Nullary)
                    .chain(with_each_unit(&[]).into_iter().map(TypeSignature::Exact))
                    .collect(),
                Volatility::Volatile,
            ),
            returns!(DataType::Int64),
            |a, rows| {
                let Some(times) = a.first() else {
                    let now = chrono::Utc::now().timestamp_millis();
                    return Ok(Arc::new(Int64Array::from(vec![now; rows])));
                };
                Ok(cast(&cast(times, &TS)?, &DataType::Int64)?)
            },
        ),
    ]
}

/// A timestamp of each unit (SQL literals are nanoseconds, Eddy's columns milliseconds), then
/// `rest`: the argument lists of a function taking a timestamp first.
fn with_each_unit(rest: &[DataType]) -> Vec<Vec<DataType>> {
    [
        TimeUnit::Millisecond,
        TimeUnit::Nanosecond,
        TimeUnit::Microsecond,
        TimeUnit::Second,
    ]
    .into_iter()
    .map(|unit| {
        std::iter::once(DataType::Timestamp(unit, None))
            .chain(rest.iter().cloned())
            .collect()
    })
    .collect()
}

/// `first`, then a timestamp of each unit: the argument lists of a function taking a
/// timestamp last.
fn with_each_unit_after(first: &[DataType]) -> Vec<Vec<DataType>> {
    with_each_unit(&[])
        .into_iter()
        .map(|ts| first.iter().cloned().chain(ts).collect())
        .collect()
}

/// `before`, a time of each unit (SQL literals are nanoseconds, Eddy's columns milliseconds),
/// then `after`: the argument lists of a function taking a time.
fn with_each_time_unit(before: &[DataType], after: &[DataType]) -> Vec<Vec<DataType>> {
    [
        TIME,
        DataType::Time64(TimeUnit::Nanosecond),
        DataType::Time64(TimeUnit::Microsecond),
        DataType::Time32(TimeUnit::Second),
    ]
    .into_iter()
    .map(|time| {
        before
            .iter()
            .cloned()
            .chain(std::iter::once(time))
            .chain(after.iter().cloned())
            .collect()
    })
    .collect()
}

/// Each row's move in milliseconds, from the unit and count of `a`'s first two arguments (`sign`
/// -1 to move back); null when either is, the unit is not one of ksqlDB's, or it overflows.
fn moves(a: &[ArrayRef], sign: i64) -> Result<Vec<Option<i64>>> {
    let units = strings(&a[0])?;
    let counts = ints(&a[1])?;
    Ok((0..units.len())
        .map(|i| {
            if units.is_null(i) || counts.is_null(i) {
                return None;
            }
            let unit = unit_millis(units.value(i))?;
            counts.value(i).checked_mul(unit)?.checked_mul(sign)
        })
        .collect())
}

/// `TIMESTAMPADD`/`TIMESTAMPSUB` (`sign` -1): the timestamp moved by n units; NULL when any
/// argument is, or the unit is not one of ksqlDB's.
fn shift(a: &[ArrayRef], sign: i64) -> Result<ArrayRef> {
    let times = cast(&a[2], &TS)?;
    let times = times.as_primitive::<TimestampMillisecondType>();
    let out: TimestampMillisecondArray = moves(a, sign)?
        .into_iter()
        .enumerate()
        .map(|(i, by)| times.is_valid(i).then(|| times.value(i).checked_add(by?))?)
        .collect();
    Ok(Arc::new(out))
}

/// `DATEADD`/`DATESUB` (`sign` -1): the date moved by n units. As in ksqlDB, the date's midnight
/// is moved and cut back to whole days towards zero (Java's `TimeUnit.toDays`), so a unit below
/// a day counts only when the move crosses a midnight: `DATEADD(HOURS, -1, d)` is the day before.
fn shift_date(a: &[ArrayRef], sign: i64) -> Result<ArrayRef> {
    let dates = cast(&a[2], &DATE)?;
    let dates = dates.as_primitive::<Date32Type>();
    let out: Date32Array = moves(a, sign)?
        .into_iter()
        .enumerate()
        .map(|(i, by)| {
            let midnight = i64::from(dates.is_valid(i).then(|| dates.value(i))?) * DAY_MILLIS;
            i32::try_from(midnight.checked_add(by?)? / DAY_MILLIS).ok()
        })
        .collect();
    Ok(Arc::new(out))
}

/// `TIMEADD`/`TIMESUB` (`sign` -1): the time moved by n units, around the clock past midnight
/// either way, as ksqlDB's `LocalTime.plus` does.
fn shift_time(a: &[ArrayRef], sign: i64) -> Result<ArrayRef> {
    let times = cast(&a[2], &TIME)?;
    let times = times.as_primitive::<Time32MillisecondType>();
    let out: Time32MillisecondArray = moves(a, sign)?
        .into_iter()
        .enumerate()
        .map(|(i, by)| {
            let time = i64::from(times.is_valid(i).then(|| times.value(i))?);
            i32::try_from((time + by? % DAY_MILLIS).rem_euclid(DAY_MILLIS)).ok()
        })
        .collect();
    Ok(Arc::new(out))
}

/// Milliseconds in one of ksqlDB's time units (`MILLISECONDS` … `DAYS`, singular too).
fn unit_millis(unit: &str) -> Option<i64> {
    let unit = unit.to_ascii_uppercase();
    Some(match unit.strip_suffix('S').unwrap_or(&unit) {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return None,
    })
}

/// The functions whose first argument is one of ksqlDB's unit keywords.
const UNIT_FUNCTIONS: [&str; 6] = [
    "timestampadd",
    "timestampsub",
    "dateadd",
    "datesub",
    "timeadd",
    "timesub",
];

/// `sql` with the unit keyword of each `TIMESTAMPADD(unit, …)`, `TIMESTAMPSUB`, `DATEADD`,
/// `DATESUB`, `TIMEADD` and `TIMESUB` quoted (`TIMESTAMPADD('SECONDS', …)`), as DataFusion's
/// parser would read it as a column. Text in string literals is left alone.
pub fn quote_time_units(sql: &str) -> String {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let lower = sql.to_ascii_lowercase();
    if !UNIT_FUNCTIONS.iter().any(|f| lower.contains(f)) {
        return sql.to_string();
    }
    let Some(tokens) = super::tokens::with_offsets(sql) else {
        return sql.to_string();
    };
    let mut out = String::with_capacity(sql.len() + 8);
    let mut copied = 0;
    for i in 2..tokens.len().saturating_sub(1) {
        let (Token::Word(f), Token::LParen, Token::Word(u), Token::Comma) = (
            &tokens[i - 2].0,
            &tokens[i - 1].0,
            &tokens[i].0,
            &tokens[i + 1].0,
        ) else {
            continue;
        };
        let function = f.value.to_ascii_lowercase();
        if !UNIT_FUNCTIONS.contains(&function.as_str())
            || u.quote_style.is_some()
            || unit_millis(&u.value).is_none()
        {
            continue;
        }
        let start = tokens[i].1;
        let end = start + u.value.len();
        if sql.get(start..end) != Some(u.value.as_str()) {
            continue;
        }
        out.push_str(&sql[copied..start]);
        out.push('\'');
        out.push_str(&u.value);
        out.push('\'');
        copied = end;
    }
    out.push_str(&sql[copied..]);
    out
}

/// Applies `f` to each row's (text, pattern), null when either is.
fn per_row<T>(a: &[ArrayRef], f: impl Fn(&str, &str) -> Option<T>) -> Result<Vec<Option<T>>> {
    let texts = strings(&a[0])?;
    let patterns = strings(&a[1])?;
    Ok((0..texts.len())
        .map(|i| {
            if texts.is_null(i) || patterns.is_null(i) {
                None
            } else {
                f(texts.value(i), patterns.value(i))
            }
        })
        .collect())
}

/// `text` read with a Java pattern as days since the epoch: `PARSE_DATE` gives them as a `DATE`,
/// `STRINGTODATE` as an `INTEGER`.
fn parse_date(text: &str, pattern: &str) -> Option<i32> {
    NaiveDate::parse_from_str(text, &chrono_format(pattern))
        .ok()
        .map(Date32Type::from_naive_date)
}

/// Each `DATE` of `dates` as text in its row's Java pattern, null when either is: `FORMAT_DATE`,
/// and `DATETOSTRING` once its days are dates.
fn format_dates(dates: &ArrayRef, patterns: &ArrayRef) -> Result<ArrayRef> {
    let dates = dates.as_primitive::<Date32Type>();
    let patterns = strings(patterns)?;
    let out: StringArray = (0..dates.len())
        .map(|i| {
            if dates.is_null(i) || patterns.is_null(i) {
                return None;
            }
            let d = Date32Type::to_naive_date_opt(dates.value(i))?;
            format(d.format(&chrono_format(patterns.value(i))))
        })
        .collect();
    Ok(Arc::new(out))
}

/// `text` read with a Java pattern as a time of day, in milliseconds; `None` when it does not
/// match, or the pattern has a date in it (ksqlDB refuses one).
fn parse_time(text: &str, pattern: &str) -> Option<i32> {
    let mut parsed = Parsed::new();
    chrono::format::parse(
        &mut parsed,
        text,
        StrftimeItems::new(&chrono_format(pattern)),
    )
    .ok()?;
    let has_date = parsed.year().is_some()
        || parsed.year_mod_100().is_some()
        || parsed.month().is_some()
        || parsed.day().is_some()
        || parsed.ordinal().is_some()
        || parsed.weekday().is_some();
    if has_date {
        return None;
    }
    Some(time_to_time32ms(parsed.to_naive_time().ok()?))
}

/// `CONVERT_TZ(ts, from, to)`: the timestamp moved by how far `to`'s offset from UTC is from
/// `from`'s at that instant, as ksqlDB does; null when any argument is, or a zone is not known
/// (ksqlDB logs it, and nulls it).
fn convert_tz(a: &[ArrayRef]) -> Result<ArrayRef> {
    let times = cast(&a[0], &TS)?;
    let times = times.as_primitive::<TimestampMillisecondType>();
    let from = strings(&a[1])?;
    let to = strings(&a[2])?;
    let out: TimestampMillisecondArray = (0..times.len())
        .map(|i| {
            if times.is_null(i) || from.is_null(i) || to.is_null(i) {
                return None;
            }
            let t = times.value(i);
            let at = DateTime::from_timestamp_millis(t)?.naive_utc();
            let offset = |zone: &str| -> Option<i64> {
                let seconds = time_zone(zone)?.offset_from_utc_datetime(&at).fix();
                Some(i64::from(seconds.local_minus_utc()) * 1000)
            };
            t.checked_add(offset(to.value(i))? - offset(from.value(i))?)
        })
        .collect();
    Ok(Arc::new(out))
}

/// A zone as Java's `ZoneId.of` names one: a region (`Europe/London`), `UTC`, `Z`, or an offset
/// (`+02:00`, `+0200`, `-05`), bare or after `UTC`, `GMT` or `UT`.
fn time_zone(id: &str) -> Option<Tz> {
    if id == "Z" {
        return "+00:00".parse().ok();
    }
    let offset = ["UTC", "GMT", "UT"]
        .iter()
        .find_map(|prefix| id.strip_prefix(prefix))
        .filter(|rest| rest.starts_with(['+', '-']));
    offset.unwrap_or(id).parse().ok()
}

/// Formats, or null when the pattern asks for what the value lacks (a time of a date).
fn format(
    formatted: chrono::format::DelayedFormat<chrono::format::StrftimeItems<'_>>,
) -> Option<String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{formatted}").ok()?;
    Some(out)
}

/// `text` read with a Java `DateTimeFormatter` pattern, as ms since the epoch (UTC, or the
/// offset the text gives when the pattern reads one); `None` when it does not match. A pattern
/// without a time of day reads midnight.
pub fn parse_timestamp(text: &str, pattern: &str) -> Option<i64> {
    // Reading is laxer than writing, as Java's is: any number of fraction digits, an offset
    // with or without its minutes, and `Z` for UTC where the pattern has `X`.
    let format = chrono_format(pattern)
        .replace(".%3f", "%.f")
        .replace(".%6f", "%.f")
        .replace(".%9f", "%.f")
        .replace("%:z", "%#z")
        .replace("%z", "%#z");
    if format.contains("%#z") {
        let text = match text.strip_suffix('Z') {
            Some(utc) if pattern.contains('X') => format!("{utc}+00:00"),
            _ => text.to_string(),
        };
        return DateTime::parse_from_str(&text, &format)
            .ok()
            .map(|t| t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(text, &format)
        .or_else(|_| {
            NaiveDate::parse_from_str(text, &format)
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// A Java `DateTimeFormatter` pattern as a chrono format string: the common letters
/// (`yyyy MM dd HH mm ss SSS` and friends); quoted text is literal.
pub(crate) fn chrono_format(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // '' is a quote; 'text' is text.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                push_literal(&mut out, chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        let mut run = 1;
        while chars.get(i + run) == Some(&c) {
            run += 1;
        }
        i += run;
        let spec = match (c, run) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('S', _) => "%3f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('Z', _) => "%z",
            ('X' | 'x', _) => "%:z",
            _ => {
                for _ in 0..run {
                    push_literal(&mut out, c);
                }
                continue;
            }
        };
        out.push_str(spec);
    }
    out
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::{chrono_format, parse_time, quote_time_units, time_zone};

    #[test]
    fn time_units_are_quoted() {
        assert_eq!(
            quote_time_units("SELECT TIMESTAMPADD(SECONDS, 5, ts), 'timestampadd(days,' FROM s"),
            "SELECT TIMESTAMPADD('SECONDS', 5, ts), 'timestampadd(days,' FROM s"
        );
        assert_eq!(
            quote_time_units("SELECT timestampsub(\n  days , 1, ts) FROM s"),
            "SELECT timestampsub(\n  'days' , 1, ts) FROM s"
        );
        let plain = "SELECT a FROM s";
        assert_eq!(quote_time_units(plain), plain);
    }

    #[test]
    fn date_and_time_units_are_quoted() {
        assert_eq!(
            quote_time_units("SELECT DATEADD(DAYS, 2, d), datesub(day, 1, d) FROM s"),
            "SELECT DATEADD('DAYS', 2, d), datesub('day', 1, d) FROM s"
        );
        assert_eq!(
            quote_time_units("SELECT TimeAdd(HOURS, 1, t), TIMESUB(Milliseconds, 5, t) FROM s"),
            "SELECT TimeAdd('HOURS', 1, t), TIMESUB('Milliseconds', 5, t) FROM s"
        );
        // Only a unit keyword is quoted: a column, or a call of another function, is not.
        let other = "SELECT DATEADD(n, 2, d), TIMEADD('HOURS', 1, t), ADD(DAYS, 1) FROM s";
        assert_eq!(quote_time_units(other), other);
    }

    #[test]
    fn times_parse_without_a_date() {
        assert_eq!(parse_time("01:00:00 Pm", "hh:mm:ss a"), Some(46_800_000));
        assert_eq!(parse_time("13:25", "HH:mm"), Some(48_300_000));
        assert_eq!(parse_time("2024-01-01 13:25", "yyyy-MM-dd HH:mm"), None);
    }

    #[test]
    fn zones_are_named_as_java_names_them() {
        for id in [
            "Europe/London",
            "UTC",
            "Z",
            "+02:00",
            "+0200",
            "-05",
            "GMT+01:00",
            "UTC-0330",
        ] {
            assert!(time_zone(id).is_some(), "{id}");
        }
        for id in ["Mars/Olympus", "UTC+", "+2:00", ""] {
            assert!(time_zone(id).is_none(), "{id}");
        }
    }

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(chrono_format("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(
            chrono_format("yyyy-MM-dd'T'HH:mm:ss.SSS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(
            chrono_format("dd/MMM/yy h a '100%'''"),
            "%d/%b/%y %-I %p 100%%'"
        );
    }
}
