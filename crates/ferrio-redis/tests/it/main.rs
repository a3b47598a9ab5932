//! Integration tests of ferrio-redis: real `redis-server` processes (and a Redis Cluster)
//! started by each test on free ports, ferrio nodes served in-process, raw WebSocket
//! clients. The mixed Node/ferrio cluster and nginx tests live in `tests/interop`.

mod client_recovery;
mod cluster;
mod confirmed;
mod faults;
mod history;
mod redis_cluster;
mod support;
