//! The epoch ticker: one thread per engine advancing wasmtime's epoch, which is how deadlines
//! are noticed while wasm runs and how a busy task yields to other runs.

use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances; deadlines are checked, and busy tasks yield to other runs,
/// at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Starts the ticker; it stops by itself once the engine is dropped.
pub(crate) fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("flowhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("cannot spawn the epoch ticker thread");
}
