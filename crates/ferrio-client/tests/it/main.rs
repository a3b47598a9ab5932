//! Integration tests of ferrio-client: against ferrio (in process and as the `ferrio`
//! binary) and against Node's reference server, through a controllable TCP proxy where a
//! test needs a bad network. Every wait has a timeout; every child process is killed by PID.

mod ferrio_server;
mod flaky;
mod heartbeat;
mod node_reference;
mod proxy;
mod reconnect;
mod recovery;
mod support;
