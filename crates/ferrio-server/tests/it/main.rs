//! Integration tests of `ferrio serve` and its security layer (one test binary).

mod api;
mod auth;
mod backend;
mod cli;
mod config;
mod dashboard;
mod deploy;
mod edge;
mod history;
mod jwks;
mod limits;
mod log_lines;
mod ops;
mod origin;
mod presence;
mod reserved_events;
mod schemas;
mod support;
mod webhooks;
mod ws_close;
