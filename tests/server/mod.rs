//! End-to-end tests of `btps serve`: real TLS on loopback, a real DNS server on
//! loopback, real redb files.

mod bad_input;
mod clock;
mod crash_campaign;
mod disk_full;
mod failure_metrics;
mod flows;
mod hooks;
mod json_storage;
mod limits;
mod process;
mod vectors;
