//! The integration tests: one binary, a module per area, shared helpers in `util`.

mod schema;
mod util;
mod vectors;
