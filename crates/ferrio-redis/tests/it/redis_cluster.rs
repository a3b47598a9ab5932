//! ferrio nodes on a real Redis Cluster (three masters made by `redis-cli --cluster
//! create`): sharded pub/sub follows each channel's slot owner, classic pub/sub is
//! propagated by the cluster bus, and `serverCount` sums every node's subscribers.

use std::time::Duration;

use ferrio::builtins::RoomEvents;
use ferrio::{Config, Io, Sid};
use ferrio_redis::{Emitter, Mode, RedisAdapter};
use serde_json::json;

use crate::support::{Client, Node, RedisCluster, WAIT, eventually, have_redis, serve};

async fn cluster_node(cluster: &RedisCluster, mode: Mode) -> Node {
    let redis = RedisAdapter::cluster_builder(cluster.urls())
        .mode(mode)
        .requests_timeout(Duration::from_secs(2))
        .health_interval(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect to the cluster");
    let io = Io::builder(Config::default())
        .adapter(redis.factory())
        .ns("/", |ns| RoomEvents::default().install(ns))
        .build();
    let node = serve(io, redis).await;
    eventually("subscribed", WAIT, || node.redis.is_healthy()).await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_a_redis_cluster() {
    if !have_redis() {
        return;
    }
    let cluster = RedisCluster::start().await;
    for mode in [Mode::Sharded, Mode::Classic] {
        let a = cluster_node(&cluster, mode).await;
        let b = cluster_node(&cluster, mode).await;
        let ns_a = a.io.of("/").expect("ns");
        let deadline = tokio::time::Instant::now() + WAIT;
        while ns_a.adapter().server_count().await.unwrap_or(0) != 2 {
            assert!(tokio::time::Instant::now() < deadline, "{mode:?}: server count");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ca = Client::connect(a.addr).await;
        let mut cb = Client::connect(b.addr).await;
        // Rooms whose channels hash to different slots, hence different masters.
        let rooms = ["alpha", "beta", "gamma", "delta"];
        for room in rooms {
            ca.join(room).await;
            cb.join(room).await;
        }
        crate::support::settle(&[&a, &b]).await;
        for room in rooms {
            ns_a.to(room).emit("m", json!(room)).expect("emit");
            assert_eq!(ca.expect("m").await, vec![json!(room)], "{mode:?}");
            assert_eq!(cb.expect("m").await, vec![json!(room)], "{mode:?}");
        }
        let sockets = ns_a.to("beta").fetch_sockets().await.expect("fetch");
        assert_eq!(sockets.len(), 2, "{mode:?}");
        let b_sid: Sid = cb.id.parse().expect("sid");
        ns_a.to(b_sid).emit("direct", ()).expect("emit");
        cb.expect("direct").await;
        let emitter = Emitter::cluster_builder(cluster.urls())
            .mode(mode)
            .connect()
            .await
            .expect("emitter");
        emitter
            .to("gamma")
            .emit("from-emitter", json!(7))
            .await
            .expect("emit");
        assert_eq!(ca.expect("from-emitter").await, vec![json!(7)]);
        assert_eq!(cb.expect("from-emitter").await, vec![json!(7)]);
        ca.expect_silence(Duration::from_millis(100)).await;
        cb.expect_silence(Duration::from_millis(100)).await;
    }
}
