//! The classic `@socket.io/redis-adapter` format: broadcasts on `<key>#<nsp>#[<room>#]`,
//! requests and responses on `<key>-request#<nsp>#` and `<key>-response#<nsp>#[<uid>#]`.

use super::*;

impl RedisAdapter {
    pub(super) fn on_classic_broadcast(&self, channel: &str, payload: &[u8]) -> Result<(), DecodeError> {
        let room = channel
            .strip_prefix(self.channels.main.as_str())
            .and_then(|r| r.strip_suffix('#'))
            .unwrap_or_default();
        if !room.is_empty() && !self.local.has_room_or_socket(room) && !self.retains(room) {
            return Ok(());
        }
        let msg = codec::decode(payload)?;
        let Mp::Array(parts) = &msg else {
            return Err(DecodeError("broadcast is not an array".into()));
        };
        if parts.first().and_then(Mp::as_str) == Some(self.uid.as_str()) {
            return Ok(());
        }
        let packet = parts
            .get(1)
            .ok_or_else(|| DecodeError("broadcast without packet".into()))?;
        let packet = codec::packet_from_msgpack(packet, "/")?;
        if packet.nsp != self.nsp() {
            return Ok(());
        }
        let opts = wire::options_from_mp(parts.get(2));
        self.deliver(packet, &opts);
        Ok(())
    }

    pub(super) fn on_classic_request(&self, payload: &[u8]) -> Result<(), DecodeError> {
        let body = Body::parse(payload)?;
        let req = body.json();
        let kind = req
            .get("type")
            .and_then(Value::as_u64)
            .ok_or_else(|| DecodeError("request without type".into()))?;
        let uid = req.get("uid").and_then(Value::as_str);
        let from_self = uid == Some(self.uid.as_str());
        let request_id = req.get("requestId").and_then(Value::as_str).map(str::to_owned);
        let mine = request_id
            .as_deref()
            .is_some_and(|id| self.requests.lock().contains_key(id));
        let respond = |value: Value| {
            let _ = self.publish(self.classic_response_channel(uid), value.to_string().into_bytes());
        };
        use classic_type::*;
        match kind {
            SOCKETS if !mine => {
                let opts = BroadcastOptions {
                    rooms: rooms_of(req.get("rooms")),
                    ..Default::default()
                };
                let ids: Vec<Value> = self
                    .local
                    .select(&opts)
                    .iter()
                    .map(|s| Value::from(s.id().as_str()))
                    .collect();
                respond(json!({"requestId": request_id, "sockets": ids}));
            }
            ALL_ROOMS if !mine => {
                let rooms: Vec<Value> = self
                    .local
                    .rooms()
                    .iter()
                    .map(|r| Value::from(r.as_ref()))
                    .collect();
                respond(json!({"requestId": request_id, "rooms": rooms}));
            }
            REMOTE_JOIN | REMOTE_LEAVE | REMOTE_DISCONNECT => {
                if let Some(opts) = req.get("opts") {
                    if from_self {
                        return Ok(());
                    }
                    let opts = options_from(Some(opts));
                    let rooms: Vec<Room> = rooms_of(req.get("rooms")).into_vec();
                    match kind {
                        REMOTE_JOIN => self.local_join(&opts, &rooms),
                        REMOTE_LEAVE => self.local_leave(&opts, &rooms),
                        _ => self.local_disconnect(
                            &opts,
                            req.get("close").and_then(Value::as_bool).unwrap_or(false),
                        ),
                    }
                } else {
                    // The legacy single-socket form: `{sid, room, requestId}`.
                    let Some(sid) = req.get("sid").and_then(Value::as_str) else {
                        return Ok(());
                    };
                    let opts = BroadcastOptions {
                        rooms: smallvec::smallvec![Room::from(sid)],
                        ..Default::default()
                    };
                    let Some(socket) = self.local.select(&opts).into_iter().next() else {
                        return Ok(());
                    };
                    let room = req.get("room").and_then(room_text);
                    match (kind, room) {
                        (REMOTE_JOIN, Some(room)) => socket.join(room),
                        (REMOTE_LEAVE, Some(room)) => socket.leave(room),
                        (REMOTE_DISCONNECT, _) => {
                            socket.disconnect(req.get("close").and_then(Value::as_bool).unwrap_or(false))
                        }
                        _ => {}
                    }
                    respond(json!({"requestId": request_id}));
                }
            }
            REMOTE_FETCH if !mine => {
                let opts = options_from(req.get("opts"));
                let sockets: Vec<Value> = self
                    .local
                    .fetch_sockets(&opts)
                    .iter()
                    .map(Self::socket_json)
                    .collect();
                respond(json!({"requestId": request_id, "sockets": sockets}));
            }
            SERVER_SIDE_EMIT if !from_self => {
                let data = req.get("data").cloned().unwrap_or(Value::Null);
                let responder = request_id.map(|id| {
                    let me = self.me.clone();
                    Box::new(move |answer: Value| {
                        if let Some(me) = me.upgrade() {
                            let msg = json!({"type": SERVER_SIDE_EMIT, "requestId": id, "data": answer});
                            // Answers to server-side emits always use the shared channel.
                            let _ = me.publish(me.channels.response.clone(), msg.to_string().into_bytes());
                        }
                    }) as Box<dyn FnOnce(Value) + Send>
                });
                self.run_server_event(&data, responder);
            }
            BROADCAST => {
                let Some(request_id) = request_id else {
                    return Ok(());
                };
                if self.ack_requests.lock().contains_key(&request_id) {
                    return Ok(());
                }
                let packet = body
                    .member(&["packet"])
                    .ok_or_else(|| DecodeError("broadcast without packet".into()))?
                    .packet(self.nsp())?;
                let opts = options_from(req.get("opts"));
                self.run_broadcast_with_ack(packet, opts, request_id, uid.map(str::to_owned));
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn on_classic_response(&self, payload: &[u8]) -> Result<(), DecodeError> {
        let body = Body::parse(payload)?;
        let resp = body.json();
        let Some(request_id) = resp.get("requestId").and_then(Value::as_str) else {
            return Ok(());
        };
        let kind = resp.get("type").and_then(Value::as_u64);
        if let Some(ack) = self.ack_requests.lock().get(request_id) {
            match kind {
                Some(classic_type::BROADCAST_CLIENT_COUNT) => {
                    let n = resp.get("clientCount").and_then(Value::as_u64).unwrap_or(0);
                    let _ = ack.counts.send(n as usize);
                }
                Some(classic_type::BROADCAST_ACK) => {
                    let arg = body.member(&["packet"]).map(|b| b.payload()).unwrap_or_default();
                    let _ = ack.acks.send((remote_ack_sid(), arg));
                }
                _ => {}
            }
            return Ok(());
        }
        if let Some(sockets) = resp.get("sockets").and_then(Value::as_array) {
            self.answer(request_id, sockets.iter().cloned(), true);
        } else if let Some(rooms) = resp.get("rooms").and_then(Value::as_array) {
            self.answer(request_id, rooms.iter().cloned(), true);
        } else if kind == Some(classic_type::SERVER_SIDE_EMIT) {
            let data = resp.get("data").cloned().unwrap_or(Value::Null);
            self.answer(request_id, [data], true);
        }
        Ok(())
    }
}
