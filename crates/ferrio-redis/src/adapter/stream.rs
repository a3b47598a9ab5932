//! Streams mode ([`crate::Mode::Streams`]): appends to the stream and what the node's reader
//! hands back (the format itself is in [`crate::streams`]).

use super::*;

impl RedisAdapter {
    /// Appends to the stream; `on_failure` runs in order with the other appends if Redis
    /// does not take it.
    pub(super) fn append_now(
        &self,
        cmd: redis::Cmd,
        on_failure: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Result<impl Future<Output = Result<(), AdapterError>> + Send + 'static, AdapterError> {
        let key = self
            .hub
            .as_ref()
            .map(|h| h.options().stream.clone())
            .unwrap_or_default();
        self.command_now(key, cmd, on_failure)
    }

    /// Queues a command on the publishing connection (in order with the publishes and
    /// appends); `key` routes it on a Redis Cluster. The future says whether Redis took it.
    pub(super) fn command_now(
        &self,
        key: String,
        cmd: redis::Cmd,
        on_failure: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Result<impl Future<Output = Result<(), AdapterError>> + Send + 'static, AdapterError> {
        let (tx, rx) = oneshot::channel();
        let done: crate::link::Done = Box::new(move |result: Result<redis::Value, LinkError>| {
            if result.is_err()
                && let Some(f) = on_failure
            {
                f();
            }
            let _ = tx.send(result.map(drop).map_err(unavailable));
        });
        self.link.command(key, cmd, Some(done)).map_err(unavailable)?;
        Ok(async move {
            rx.await
                .unwrap_or_else(|_| Err(AdapterError::Unavailable("publisher stopped".into())))
        })
    }

    pub(super) async fn append(
        &self,
        cmd: redis::Cmd,
        on_failure: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Result<(), AdapterError> {
        self.append_now(cmd, on_failure)?.await
    }

    /// A broadcast appended to the stream; this node's sockets get it when the stream gives
    /// it back (or at once, without offset, if Redis does not take it, as the reference).
    pub(super) fn broadcast_to_stream(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
    ) -> (
        usize,
        Result<impl Future<Output = Result<(), AdapterError>> + Send + 'static, AdapterError>,
    ) {
        let hub = self.hub.as_ref().expect("streams mode has a hub");
        let data = self.entry_data(packet, opts);
        let rooms = self.history_targets(packet, opts);
        let cmd = if rooms.is_empty() {
            streams::xadd(
                hub.options(),
                &self.uid,
                self.nsp(),
                cluster_type::BROADCAST,
                &data,
            )
        } else {
            // The rooms' histories get the entry under its id in the stream, in one step.
            let fields = streams::entry_fields(&self.uid, self.nsp(), cluster_type::BROADCAST, &data);
            let stream = &hub.options().stream;
            crate::history::write(Some((stream, hub.options().max_len)), &rooms, &fields)
        };
        let local = self.local.count(opts);
        let me = self.me.clone();
        let (fallback, fallback_opts) = (packet.clone(), opts.clone());
        let on_failure: Box<dyn FnOnce() + Send + Sync> = Box::new(move || {
            if let Some(me) = me.upgrade() {
                me.local.broadcast(&fallback, &fallback_opts);
            }
        });
        match self.append_now(cmd, Some(on_failure)) {
            Ok(receipt) => (local, Ok(receipt)),
            Err(e) => {
                self.local.broadcast(packet, opts);
                (local, Err(e))
            }
        }
    }

    /// A broadcast as the stream's (and the histories') entries carry it: `{packet, opts}`.
    pub(super) fn entry_data(&self, packet: &EncodedPacket, opts: &BroadcastOptions) -> Mp {
        Mp::Map(vec![
            (
                Mp::from("packet"),
                codec::packet_to_msgpack(&packet.cluster_packet(), false),
            ),
            (Mp::from("opts"), options_mp(opts, true)),
        ])
    }

    /// The rooms' histories a broadcast is appended to (see [`crate::history`]).
    pub(super) fn history_targets(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
    ) -> Vec<crate::history::Target> {
        match &self.history {
            Some(rules) => rules.targets(self.nsp(), packet.packet(), opts),
            None => Vec::new(),
        }
    }

    /// Classic and sharded formats: appends a broadcast to its rooms' histories, queued
    /// before its publish on the same connection; `None` when no room of it keeps one.
    pub(super) fn append_history(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        on_failure: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Option<Result<impl Future<Output = Result<(), AdapterError>> + Send + 'static, AdapterError>> {
        let rooms = self.history_targets(packet, opts);
        let first = rooms.first()?.key.clone();
        let data = self.entry_data(packet, opts);
        let fields = streams::entry_fields(&self.uid, self.nsp(), cluster_type::BROADCAST, &data);
        let cmd = crate::history::write(None, &rooms, &fields);
        Some(self.command_now(first, cmd, on_failure))
    }

    /// An entry read from the stream, for this namespace.
    pub(crate) fn on_stream_entry(&self, entry: streams::Entry) {
        let mine = entry.uid == self.uid;
        let Some(data) = entry.data else { return };
        let opts = data.options();
        match entry.kind {
            cluster_type::BROADCAST => {
                if data.has("requestId") {
                    return;
                }
                let packet = match data.member(&["packet"]).map(|p| p.packet(self.nsp())) {
                    Some(Ok(packet)) => packet,
                    _ => {
                        self.link.count_malformed();
                        return;
                    }
                };
                match self.ctx.namespace() {
                    Some(ns) => {
                        ns.deliver_logged(&entry.id, packet, &opts);
                    }
                    None => {
                        self.local.broadcast(&EncodedPacket::new(packet), &opts);
                    }
                }
            }
            // This node's own were applied when they were made.
            cluster_type::SOCKETS_JOIN | cluster_type::SOCKETS_LEAVE if !mine => {
                let json = data.json();
                let rooms: Vec<Room> = rooms_of(json.get("rooms")).into_vec();
                if entry.kind == cluster_type::SOCKETS_JOIN {
                    self.local_join(&opts, &rooms);
                } else {
                    self.local_leave(&opts, &rooms);
                }
            }
            cluster_type::DISCONNECT_SOCKETS if !mine => {
                let close = data.json().get("close").and_then(Value::as_bool).unwrap_or(false);
                self.local_disconnect(&opts, close);
            }
            _ => {}
        }
    }

    /// Reading the stream lost entries (trimmed past this node's position).
    pub(crate) fn stream_broke(&self) {
        if let Some(ns) = self.ctx.namespace() {
            ns.log_broke();
        }
    }
}
