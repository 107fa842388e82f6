//! Host bindings generated from `wit/udf.wit`, the single source of the host/guest contract.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "scalar-udf",
});
