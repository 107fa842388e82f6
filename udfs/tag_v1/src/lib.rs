//! Version 1 of `tag`; `tag_v2` is the other. The hot-swap test tells them apart by the prefix.
use eddy_udf::udf;

/// Tags an event with the version that processed it: `v1:<event_id>`.
#[udf]
fn tag(event_id: i64) -> String {
    format!("v1:{event_id}")
}

eddy_udf::export!(tag);
