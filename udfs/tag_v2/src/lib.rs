//! Version 2 of `tag`; `tag_v1` is the other. The hot-swap test tells them apart by the prefix.
use eddy_udf::udf;

/// Tags an event with the version that processed it: `v2:<event_id>`.
#[udf]
fn tag(event_id: i64) -> String {
    format!("v2:{event_id}")
}

eddy_udf::export!(tag);
