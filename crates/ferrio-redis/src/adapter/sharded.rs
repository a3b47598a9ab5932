//! The cluster adapter format of `createShardedAdapter` (and of the streams adapter's
//! requests): one msgpack message `{uid, nsp, type, data}` per broadcast, request or answer.

use super::*;

impl RedisAdapter {
    /// A sharded message: `{type, data, uid, nsp}`, JSON unless `data` holds binary.
    pub(super) fn cluster_message(&self, kind: u64, data: Mp) -> Vec<u8> {
        let msg = Mp::Map(vec![
            (Mp::from("type"), Mp::from(kind)),
            (Mp::from("data"), data),
            (Mp::from("uid"), Mp::from(self.uid.as_str())),
            (Mp::from("nsp"), Mp::from(self.nsp())),
        ]);
        if self.opts.mode == Mode::Streams || codec::has_binary(&msg) {
            codec::encode(&msg)
        } else {
            codec::to_json(&msg).to_string().into_bytes()
        }
    }

    pub(super) fn on_cluster_message(
        &self,
        payload: &[u8],
        addressed_to_me: bool,
    ) -> Result<(), DecodeError> {
        let body = Body::parse(payload)?;
        let head = match &body {
            Body::Json(v) => v.clone(),
            Body::Mp(m) => json!({
                "type": codec::get(m, "type").and_then(Mp::as_u64),
                "uid": codec::get(m, "uid").and_then(Mp::as_str),
                "nsp": codec::get(m, "nsp").and_then(Mp::as_str),
            }),
        };
        let kind = head
            .get("type")
            .and_then(Value::as_u64)
            .ok_or_else(|| DecodeError("message without type".into()))?;
        let uid = head.get("uid").and_then(Value::as_str).map(str::to_owned);
        if uid.as_deref() == Some(self.uid.as_str()) {
            return Ok(());
        }
        if head.get("nsp").and_then(Value::as_str) != Some(self.nsp()) {
            return Ok(());
        }
        let data = body
            .member(&["data"])
            .ok_or_else(|| DecodeError("message without data".into()))?;
        let request_id = data.text("requestId");
        use cluster_type::*;
        if kind == BROADCAST {
            // The hot path: the packet and options read in place, nothing turned into JSON.
            let packet = data
                .member(&["packet"])
                .ok_or_else(|| DecodeError("broadcast without packet".into()))?
                .packet(self.nsp())?;
            let opts = data.options();
            match request_id {
                Some(id) => self.run_broadcast_with_ack(packet, opts, id, uid),
                None => {
                    self.deliver(packet, &opts);
                }
            }
            return Ok(());
        }
        let data_json = data.json();
        match kind {
            SOCKETS_JOIN | SOCKETS_LEAVE => {
                let opts = options_from(data_json.get("opts"));
                let rooms: Vec<Room> = rooms_of(data_json.get("rooms")).into_vec();
                if kind == SOCKETS_JOIN {
                    self.local_join(&opts, &rooms);
                } else {
                    self.local_leave(&opts, &rooms);
                }
            }
            DISCONNECT_SOCKETS => {
                let opts = options_from(data_json.get("opts"));
                self.local_disconnect(
                    &opts,
                    data_json.get("close").and_then(Value::as_bool).unwrap_or(false),
                );
            }
            FETCH_SOCKETS => {
                let (Some(id), Some(requester)) = (request_id, uid) else {
                    return Ok(());
                };
                let opts = options_from(data_json.get("opts"));
                let sockets: Vec<Value> = self
                    .local
                    .fetch_sockets(&opts)
                    .iter()
                    .map(Self::socket_json)
                    .collect();
                let msg = self.cluster_message(
                    FETCH_SOCKETS_RESPONSE,
                    codec::from_json(&json!({"requestId": id, "sockets": sockets})),
                );
                let _ = self.publish(format!("{}{requester}#", self.channels.main), msg);
            }
            SERVER_SIDE_EMIT => {
                let packet = data_json.get("packet").cloned().unwrap_or(Value::Null);
                let responder = match (request_id, uid) {
                    (Some(id), Some(requester)) => {
                        let me = self.me.clone();
                        Some(Box::new(move |answer: Value| {
                            if let Some(me) = me.upgrade() {
                                let msg = me.cluster_message(
                                    SERVER_SIDE_EMIT_RESPONSE,
                                    codec::from_json(&json!({"requestId": id, "packet": answer})),
                                );
                                let _ = me.publish(format!("{}{requester}#", me.channels.main), msg);
                            }
                        }) as Box<dyn FnOnce(Value) + Send>)
                    }
                    _ => None,
                };
                self.run_server_event(&packet, responder);
            }
            FETCH_SOCKETS_RESPONSE | SERVER_SIDE_EMIT_RESPONSE | BROADCAST_CLIENT_COUNT | BROADCAST_ACK => {
                self.on_cluster_response(kind, &data, &data_json);
            }
            _ => {}
        }
        let _ = addressed_to_me;
        Ok(())
    }

    pub(super) fn on_cluster_response(&self, kind: u64, data: &Body, data_json: &Value) {
        let Some(request_id) = data_json.get("requestId").and_then(Value::as_str) else {
            return;
        };
        use cluster_type::*;
        match kind {
            BROADCAST_CLIENT_COUNT => {
                if let Some(ack) = self.ack_requests.lock().get(request_id) {
                    let n = data_json.get("clientCount").and_then(Value::as_u64).unwrap_or(0);
                    let _ = ack.counts.send(n as usize);
                }
            }
            BROADCAST_ACK => {
                if let Some(ack) = self.ack_requests.lock().get(request_id) {
                    let arg = data.member(&["packet"]).map(|b| b.payload()).unwrap_or_default();
                    let _ = ack.acks.send((remote_ack_sid(), arg));
                }
            }
            FETCH_SOCKETS_RESPONSE => {
                let sockets = data_json
                    .get("sockets")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                self.answer(request_id, sockets, true);
            }
            SERVER_SIDE_EMIT_RESPONSE => {
                let packet = data_json.get("packet").cloned().unwrap_or(Value::Null);
                self.answer(request_id, [packet], true);
            }
            _ => {}
        }
    }
}
