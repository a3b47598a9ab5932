//! Integration tests of `ferrio serve` and its security layer (one test binary).

mod api;
mod auth;
mod backend;
mod cli;
mod config;
mod dashboard;
mod deploy;
mod jwks;
mod limits;
mod ops;
mod origin;
mod presence;
mod schemas;
mod support;
mod webhooks;
