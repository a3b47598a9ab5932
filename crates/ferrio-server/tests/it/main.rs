//! Integration tests of `ferrio serve` and its security layer (one test binary).

mod auth;
mod cli;
mod config;
mod jwks;
mod limits;
mod origin;
mod support;
