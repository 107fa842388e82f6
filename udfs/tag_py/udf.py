"""A Python version of `tag` (udfs/tag_v1, tag_v2): the hot-swap test moves a running query
between Rust and Python and tells the versions apart by the prefix."""

from eddy_udf import udf


@udf
def tag(event_id: int) -> str:
    """Tags an event with the version that processed it: `v3:<event_id>` (version 3 is the Python one)."""
    return f"v3:{event_id}"
