//! Symbols Debian's 2022 wasi-libc lacks but Rust 1.96's std links against.

/// A UDF has no filesystem, so resolving a path always fails (null, as libc does on error).
#[unsafe(no_mangle)]
pub extern "C" fn realpath(_path: *const u8, _resolved: *mut u8) -> *mut u8 {
    core::ptr::null_mut()
}
