//! Integration tests of ferrio, against a real server on a loopback port, with raw
//! Engine.IO / Socket.IO clients (see `support`).

mod acks;
mod backpressure;
mod bad_input;
mod binary;
mod builtins;
mod cleanup;
mod engine;
mod heartbeat;
mod hooks;
mod ordering;
mod probe_close;
mod recovery_races;
mod rooms;
mod support;
