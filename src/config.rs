//! Configuration: defaults < TOML file < environment, every problem reported at once.
