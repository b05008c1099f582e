//! The integration tests: one binary, a module per area, shared helpers in `util`.

mod store;
mod util;
mod vectors;
