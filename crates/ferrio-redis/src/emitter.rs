//! [`Emitter`]: publishes into a cluster from a process that holds no sockets, as
//! `@socket.io/redis-emitter` does (uid `"emitter"`, classic format; the sharded format is
//! offered too, for clusters of sharded nodes). Acknowledgements are not supported, as in
//! the reference.

use std::sync::Arc;

use ferrio::proto::socket::Packet;
use ferrio::{Payload, Room};
use rmpv::Value as Mp;
use serde_json::{Value, json};

use crate::codec;
use crate::link::{Link, LinkError, Settings};
use crate::{Address, ConnectError, Mode};

const EMITTER_UID: &str = "emitter";

/// Configures an [`Emitter`].
#[derive(Debug, Clone)]
pub struct EmitterBuilder {
    address: Address,
    key: String,
    mode: Mode,
    settings: Settings,
}

impl EmitterBuilder {
    /// The channel prefix (default `socket.io`), as the cluster's nodes use it.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// The format of the cluster's nodes (default classic, the reference emitter's).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Connects to Redis.
    pub async fn connect(self) -> Result<Emitter, ConnectError> {
        if self.mode == Mode::Streams {
            return Err(ConnectError::Unsupported(
                "the emitter speaks the classic and sharded formats; in streams mode, publish through a node's HTTP API".into(),
            ));
        }
        let link = Link::connect_publisher(self.address.target()?, self.settings).await?;
        Ok(Emitter {
            link,
            key: Arc::from(self.key),
            mode: self.mode,
            nsp: Arc::from("/"),
        })
    }
}

/// Publishes events and room operations to every node of a cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Emitter {
    link: Arc<Link>,
    key: Arc<str>,
    mode: Mode,
    nsp: Arc<str>,
}

impl Emitter {
    /// An emitter for one Redis server.
    pub fn builder(url: impl Into<String>) -> EmitterBuilder {
        EmitterBuilder {
            address: Address::Single(url.into()),
            key: "socket.io".into(),
            mode: Mode::Classic,
            settings: Settings::default(),
        }
    }

    /// An emitter for a Redis Cluster.
    pub fn cluster_builder<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> EmitterBuilder {
        EmitterBuilder {
            address: Address::Cluster(nodes.into_iter().map(Into::into).collect()),
            ..Self::builder("")
        }
    }

    /// The same emitter for another namespace.
    pub fn of(&self, nsp: &str) -> Emitter {
        let nsp = if nsp.starts_with('/') {
            nsp.to_owned()
        } else {
            format!("/{nsp}")
        };
        Emitter {
            nsp: Arc::from(nsp),
            ..self.clone()
        }
    }

    /// Targets sockets in `room` (more with [`EmitterOperator::to`]).
    pub fn to(&self, room: impl Into<Room>) -> EmitterOperator {
        self.all().to(room)
    }

    /// Leaves out sockets in `room`.
    pub fn except(&self, room: impl Into<Room>) -> EmitterOperator {
        self.all().except(room)
    }

    /// Every socket of the namespace.
    pub fn all(&self) -> EmitterOperator {
        EmitterOperator {
            emitter: self.clone(),
            rooms: Vec::new(),
            except: Vec::new(),
            volatile: false,
        }
    }

    /// Emits to every socket of the namespace.
    pub async fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<(), LinkError> {
        self.all().emit(event, payload).await
    }

    /// Sends an event to the servers' `on_server_event` handlers.
    pub async fn server_side_emit(&self, event: &str, args: Vec<Value>) -> Result<(), LinkError> {
        let mut data = vec![Value::from(event)];
        data.extend(args);
        let payload = match self.mode {
            Mode::Classic => json!({"uid": EMITTER_UID, "type": 6, "data": data}).to_string(),
            Mode::Sharded | Mode::Streams => {
                json!({"type": 9, "data": {"packet": data}, "uid": EMITTER_UID, "nsp": &*self.nsp})
                    .to_string()
            }
        };
        self.send(self.request_channel(), payload.into_bytes()).await
    }

    /// Publisher counters.
    pub fn stats(&self) -> crate::Stats {
        self.link.stats()
    }

    fn main_channel(&self) -> String {
        format!("{}#{}#", self.key, self.nsp)
    }

    fn request_channel(&self) -> String {
        match self.mode {
            Mode::Classic => format!("{}-request#{}#", self.key, self.nsp),
            Mode::Sharded | Mode::Streams => self.main_channel(),
        }
    }

    async fn send(&self, channel: String, payload: Vec<u8>) -> Result<(), LinkError> {
        self.link
            .publish_confirmed(self.mode == Mode::Sharded, channel, payload)
            .await
    }
}

/// A selection of sockets for an [`Emitter`].
#[derive(Debug, Clone)]
pub struct EmitterOperator {
    emitter: Emitter,
    rooms: Vec<Room>,
    except: Vec<Room>,
    volatile: bool,
}

fn names(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::from(r.as_ref())).collect())
}

impl EmitterOperator {
    /// Also targets `room`.
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.rooms.contains(&room) {
            self.rooms.push(room);
        }
        self
    }

    /// Leaves out sockets in `room`.
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        self.except.push(room.into());
        self
    }

    /// May be dropped for clients not ready to receive it.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    fn flags(&self) -> Value {
        if self.volatile {
            json!({"volatile": true})
        } else {
            json!({})
        }
    }

    /// Emits an event to the selection.
    pub async fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<(), LinkError> {
        let e = &self.emitter;
        let payload = payload.into();
        let mut data = Vec::with_capacity(payload.args.len() + 1);
        data.push(Value::from(event));
        data.extend(payload.args);
        let packet = Packet::event(&*e.nsp, Value::Array(data), payload.attachments, None);
        let single_room = (self.rooms.len() == 1).then(|| &self.rooms[0]);
        match e.mode {
            Mode::Classic => {
                // Key order as the reference emitter writes it: rooms, flags, except.
                let opts = Mp::Map(vec![
                    (Mp::from("rooms"), codec::from_json(&names(&self.rooms))),
                    (Mp::from("flags"), codec::from_json(&self.flags())),
                    (Mp::from("except"), codec::from_json(&names(&self.except))),
                ]);
                let msg = Mp::Array(vec![
                    Mp::from(EMITTER_UID),
                    codec::packet_to_msgpack(&packet, true),
                    opts,
                ]);
                let channel = match single_room {
                    Some(room) => format!("{}{room}#", e.main_channel()),
                    None => e.main_channel(),
                };
                e.send(channel, codec::encode(&msg)).await
            }
            Mode::Sharded | Mode::Streams => {
                let data = Mp::Map(vec![
                    (Mp::from("packet"), codec::packet_to_msgpack(&packet, false)),
                    (
                        Mp::from("opts"),
                        codec::from_json(
                            &json!({"rooms": names(&self.rooms), "except": names(&self.except), "flags": self.flags()}),
                        ),
                    ),
                ]);
                let msg = Mp::Map(vec![
                    (Mp::from("type"), Mp::from(3)),
                    (Mp::from("data"), data),
                    (Mp::from("uid"), Mp::from(EMITTER_UID)),
                    (Mp::from("nsp"), Mp::from(&*e.nsp)),
                ]);
                let bytes = if codec::has_binary(&msg) {
                    codec::encode(&msg)
                } else {
                    codec::to_json(&msg).to_string().into_bytes()
                };
                let channel = match single_room {
                    Some(room) if room.encode_utf16().count() != 20 => format!("{}{room}#", e.main_channel()),
                    _ => e.main_channel(),
                };
                e.send(channel, bytes).await
            }
        }
    }

    /// Makes the selected sockets join `rooms`.
    pub async fn sockets_join(&self, rooms: &[&str]) -> Result<(), LinkError> {
        self.rooms_op(2, 4, rooms).await
    }

    /// Makes the selected sockets leave `rooms`.
    pub async fn sockets_leave(&self, rooms: &[&str]) -> Result<(), LinkError> {
        self.rooms_op(3, 5, rooms).await
    }

    /// Disconnects the selected sockets (`close` closes their connections too).
    pub async fn disconnect_sockets(&self, close: bool) -> Result<(), LinkError> {
        let e = &self.emitter;
        let opts = json!({"rooms": names(&self.rooms), "except": names(&self.except)});
        let payload = match e.mode {
            Mode::Classic => json!({"type": 4, "opts": opts, "close": close}),
            Mode::Sharded | Mode::Streams => {
                json!({"type": 6, "data": {"opts": opts, "close": close}, "uid": EMITTER_UID, "nsp": &*e.nsp})
            }
        };
        e.send(e.request_channel(), payload.to_string().into_bytes())
            .await
    }

    async fn rooms_op(&self, classic: u8, sharded: u8, rooms: &[&str]) -> Result<(), LinkError> {
        let e = &self.emitter;
        let opts = json!({"rooms": names(&self.rooms), "except": names(&self.except)});
        let payload = match e.mode {
            Mode::Classic => json!({"type": classic, "opts": opts, "rooms": rooms}),
            Mode::Sharded | Mode::Streams => {
                json!({"type": sharded, "data": {"opts": opts, "rooms": rooms}, "uid": EMITTER_UID, "nsp": &*e.nsp})
            }
        };
        e.send(e.request_channel(), payload.to_string().into_bytes())
            .await
    }
}
