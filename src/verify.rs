//! Verification of received artifacts.
