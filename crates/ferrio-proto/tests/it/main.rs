//! Property tests for the protocol codecs: encode→decode round-trips, and no input panics.

mod engine;
mod socket;
mod ws;
