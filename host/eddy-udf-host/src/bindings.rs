//! Host bindings generated from `wit/udf.wit`, the single source of the host/guest contract.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "scalar-udf",
    // Arguments are lowered straight from borrowed Arrow buffers (`ColumnParam<'_>`), so a
    // batch is copied once, into guest memory; results stay owned (`ColumnResult`).
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});
