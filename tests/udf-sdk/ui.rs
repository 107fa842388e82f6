//! UI tests of the Rust UDF SDK: each `ui/*.rs` case is compiled on the host by trybuild, and the
//! failing ones must print exactly their checked-in `.stderr`, the error a UDF author would see.
//!
//! After changing a message on purpose: `TRYBUILD=overwrite cargo test -p eddy-udf-sdk-tests`,
//! then review the `.stderr` diff.

#[test]
fn udf_attribute_and_export() {
    // trybuild builds the SDK and its dependencies again in `target/tests/trybuild`, with
    // cargo's default dev profile rather than the workspace's: without debug info, as the
    // workspace builds its dependencies, that is half the disk (~300 MB less) and faster.
    std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "false");
    let t = trybuild::TestCases::new();
    t.pass("ui/pass_*.rs");
    t.compile_fail("ui/fail_*.rs");
}
