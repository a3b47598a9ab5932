//! Connection-state recovery, compatible with `socket.io-client` ≥ 4.6.
//!
//! With recovery on, every event sent without an ack and not volatile carries an offset as
//! its last argument and is kept for a while. When a connection drops for a reason the
//! client did not choose, its socket's id, rooms and data are kept for
//! `max_disconnection_duration`. A client that reconnects with `{pid, offset}` in its auth
//! payload gets the same socket back and, before the CONNECT answer, every packet it missed,
//! in order.
//!
//! Everything is bounded: packets by count and bytes across the namespace, sessions by
//! count, and what one session may have missed. Past a bound, recovery fails cleanly
//! (`recovered: false`) instead of memory growing.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::adapter::{BroadcastOptions, EncodedPacket, Room};
use crate::{CloseReason, DisconnectReason, Sid};

/// Recovery settings (the reference's `connectionStateRecovery`).
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a disconnected session can still be recovered (default 2 minutes).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the namespace's connect hook (default true, as the
    /// reference's `skipMiddlewares`).
    pub skip_connect_hook: bool,
    /// Packets kept per namespace, at most (default 10,000).
    pub max_packets: usize,
    /// Bytes of packets kept per namespace, at most (default 16 MiB).
    pub max_bytes: usize,
    /// Disconnected sessions kept per namespace, at most (default 100,000).
    pub max_sessions: usize,
    /// Packets one session may have missed and still recover (default 1,000).
    pub max_missed_packets: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_disconnection_duration: Duration::from_secs(120),
            skip_connect_hook: true,
            max_packets: 10_000,
            max_bytes: 16 << 20,
            max_sessions: 100_000,
            max_missed_packets: 1_000,
        }
    }
}

/// Whether a socket that went away for `reason` may come back.
pub(crate) fn is_recoverable(reason: DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::Transport(
            CloseReason::TransportError
                | CloseReason::TransportClose
                | CloseReason::ForcedClose
                | CloseReason::PingTimeout
                | CloseReason::ServerShuttingDown
                | CloseReason::ForcedServerClose
        )
    )
}

struct StoredPacket {
    offset: u64,
    at: Instant,
    rooms: smallvec::SmallVec<[Room; 1]>,
    except: smallvec::SmallVec<[Room; 1]>,
    packet: EncodedPacket,
    bytes: usize,
}

struct Session {
    sid: Sid,
    rooms: Vec<Room>,
    data: Value,
    at: Instant,
}

/// What a successful restore gives back.
#[derive(Debug)]
pub(crate) struct Restored {
    pub sid: Sid,
    pub pid: Sid,
    pub rooms: Vec<Room>,
    pub data: Value,
    pub missed: Vec<EncodedPacket>,
}

#[derive(Default)]
struct Store {
    packets: VecDeque<StoredPacket>,
    bytes: usize,
    next_offset: u64,
    sessions: HashMap<Sid, Session>,
    /// Sessions in the order they were persisted, for expiry and the count bound.
    order: VecDeque<(Instant, Sid)>,
}

/// The packets and sessions of one namespace.
pub(crate) struct Recovery {
    config: RecoveryConfig,
    /// Distinguishes this process's offsets from a previous one's.
    epoch: String,
    store: Mutex<Store>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Recovery {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        let epoch = format!("{:x}", rand::random::<u32>());
        Self {
            config,
            epoch,
            store: Mutex::new(Store::default()),
        }
    }

    pub(crate) fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    fn offset_text(&self, offset: u64) -> String {
        format!("{}-{offset:x}", self.epoch)
    }

    fn parse_offset(&self, text: &str) -> Option<u64> {
        let (epoch, n) = text.split_once('-')?;
        if epoch != self.epoch {
            return None;
        }
        u64::from_str_radix(n, 16).ok()
    }

    /// Appends an offset to an event's arguments and keeps the packet; returns the encoded
    /// packet every recipient gets.
    pub(crate) fn record(
        &self,
        build: impl FnOnce(String) -> EncodedPacket,
        opts: &BroadcastOptions,
    ) -> EncodedPacket {
        let now = Instant::now();
        let mut store = self.store.lock();
        let offset = store.next_offset;
        store.next_offset += 1;
        let packet = build(self.offset_text(offset));
        let bytes = packet.wire_len();
        store.packets.push_back(StoredPacket {
            offset,
            at: now,
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            packet: packet.clone(),
            bytes,
        });
        store.bytes += bytes;
        self.trim(&mut store, now);
        packet
    }

    fn trim(&self, store: &mut Store, now: Instant) {
        let horizon = now.checked_sub(self.config.max_disconnection_duration);
        while let Some(front) = store.packets.front() {
            let too_old = horizon.is_some_and(|h| front.at < h);
            if too_old || store.packets.len() > self.config.max_packets || store.bytes > self.config.max_bytes
            {
                store.bytes -= front.bytes;
                store.packets.pop_front();
            } else {
                break;
            }
        }
        while let Some(&(at, pid)) = store.order.front() {
            let too_old = horizon.is_some_and(|h| at < h);
            if too_old || store.order.len() > self.config.max_sessions {
                store.order.pop_front();
                if store.sessions.get(&pid).is_some_and(|s| s.at == at) {
                    store.sessions.remove(&pid);
                }
            } else {
                break;
            }
        }
    }

    /// Keeps a disconnected socket's state under its private id.
    pub(crate) fn persist(&self, pid: Sid, sid: Sid, rooms: Vec<Room>, data: Value) {
        let now = Instant::now();
        let mut store = self.store.lock();
        store.sessions.insert(
            pid,
            Session {
                sid,
                rooms,
                data,
                at: now,
            },
        );
        store.order.push_back((now, pid));
        self.trim(&mut store, now);
    }

    /// Takes a session back, with the packets it missed after `offset`; `None` when it is
    /// unknown, expired, its offset is gone, or it missed more than allowed.
    pub(crate) fn restore(&self, pid: &str, offset: &str) -> Option<Restored> {
        let pid: Sid = pid.parse().ok()?;
        let offset = self.parse_offset(offset)?;
        let now = Instant::now();
        let mut store = self.store.lock();
        self.trim(&mut store, now);
        // The offset must still be stored: otherwise packets after it may have been lost.
        let start = store.packets.iter().position(|p| p.offset == offset)?;
        let session = store.sessions.remove(&pid)?;
        let own = Room::from(session.sid.as_str());
        let in_rooms = |rooms: &[Room]| rooms.iter().any(|r| *r == own || session.rooms.contains(r));
        let mut missed = Vec::new();
        for p in store.packets.iter().skip(start + 1) {
            let addressed = p.rooms.is_empty() || in_rooms(&p.rooms);
            if addressed && !in_rooms(&p.except) {
                if missed.len() == self.config.max_missed_packets {
                    return None;
                }
                missed.push(p.packet.clone());
            }
        }
        Some(Restored {
            sid: session.sid,
            pid,
            rooms: session.rooms,
            data: session.data,
            missed,
        })
    }

    #[cfg(test)]
    fn stored(&self) -> (usize, usize, usize) {
        let s = self.store.lock();
        (s.packets.len(), s.bytes, s.sessions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    fn opts(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            except: except.iter().map(|r| Room::from(*r)).collect(),
            ..Default::default()
        }
    }

    fn record(r: &Recovery, n: u32, o: &BroadcastOptions) -> String {
        let mut off = String::new();
        r.record(
            |offset| {
                off = offset.clone();
                EncodedPacket::event("/", "m", Payload::args(vec![n.into(), offset.into()]), None)
            },
            o,
        );
        off
    }

    fn text(p: &EncodedPacket) -> String {
        p.packet().encode()
    }

    #[tokio::test]
    async fn restores_rooms_and_missed_packets_in_order() {
        let r = Recovery::new(RecoveryConfig::default());
        let sid = Sid::random();
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, sid, vec![Room::from("a")], serde_json::json!({"k": 1}));
        record(&r, 1, &opts(&["a"], &[]));
        record(&r, 2, &opts(&["b"], &[]));
        record(&r, 3, &opts(&[sid.as_str()], &[]));
        record(&r, 4, &opts(&[], &["a"]));
        record(&r, 5, &opts(&[], &[]));
        let back = r.restore(pid.as_str(), &seen).unwrap();
        assert_eq!(back.sid, sid);
        assert_eq!(back.rooms, vec![Room::from("a")]);
        let missed: Vec<String> = back.missed.iter().map(text).collect();
        assert_eq!(missed.len(), 3, "{missed:?}");
        assert!(missed[0].starts_with(r#"2["m",1,"#));
        assert!(missed[1].starts_with(r#"2["m",3,"#));
        assert!(missed[2].starts_with(r#"2["m",5,"#));
        // A session is restored once.
        assert!(r.restore(pid.as_str(), &seen).is_none());
    }

    #[tokio::test]
    async fn unknown_or_foreign_offsets_and_pids_fail() {
        let r = Recovery::new(RecoveryConfig::default());
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null);
        assert!(r.restore(Sid::random().as_str(), &seen).is_none());
        assert!(r.restore(pid.as_str(), "zz-0").is_none());
        assert!(r.restore(pid.as_str(), "nonsense").is_none());
        assert!(r.restore("short", &seen).is_none());
        assert!(r.restore(pid.as_str(), &seen).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn everything_expires_after_the_disconnection_duration() {
        let r = Recovery::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(10),
            ..Default::default()
        });
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null);
        tokio::time::advance(Duration::from_secs(11)).await;
        record(&r, 1, &opts(&[], &[]));
        assert!(r.restore(pid.as_str(), &seen).is_none());
        let (packets, _, sessions) = r.stored();
        assert_eq!(
            (packets, sessions),
            (1, 0),
            "expired packets and sessions are dropped"
        );
    }

    #[tokio::test]
    async fn bounds_hold_and_fail_recovery_cleanly() {
        let r = Recovery::new(RecoveryConfig {
            max_packets: 5,
            max_missed_packets: 3,
            max_sessions: 2,
            ..Default::default()
        });
        let pid = Sid::random();
        let seen = record(&r, 0, &opts(&[], &[]));
        r.persist(pid, Sid::random(), vec![], Value::Null);
        for n in 1..=4 {
            record(&r, n, &opts(&[], &[]));
        }
        // Missed 4 packets, 3 allowed: no recovery.
        assert!(r.restore(pid.as_str(), &seen).is_none());
        // The packet store never holds more than its bound.
        for n in 0..100 {
            record(&r, n, &opts(&[], &[]));
        }
        assert_eq!(r.stored().0, 5);
        // Nor the session store.
        for _ in 0..10 {
            r.persist(Sid::random(), Sid::random(), vec![], Value::Null);
        }
        assert_eq!(r.stored().2, 2);
        let (_, bytes, _) = r.stored();
        assert!(bytes > 0 && bytes < 5 * 64);
    }

    #[test]
    fn recoverable_reasons_are_the_references() {
        assert!(is_recoverable(DisconnectReason::Transport(
            CloseReason::PingTimeout
        )));
        assert!(is_recoverable(DisconnectReason::Transport(
            CloseReason::TransportClose
        )));
        assert!(!is_recoverable(DisconnectReason::ClientNamespaceDisconnect));
        assert!(!is_recoverable(DisconnectReason::ServerNamespaceDisconnect));
        assert!(!is_recoverable(DisconnectReason::Transport(
            CloseReason::SlowConsumer
        )));
    }
}

#[cfg(test)]
mod footprint {
    /// What one stored packet and one persisted session cost beyond their payload (the
    /// figures docs/delivery.md quotes).
    #[test]
    fn fixed_costs_stay_small() {
        let packet = std::mem::size_of::<super::StoredPacket>();
        let session =
            std::mem::size_of::<super::Session>() + std::mem::size_of::<(crate::Sid, tokio::time::Instant)>();
        assert!(packet <= 320, "{packet}");
        assert!(session <= 192, "{session}");
        eprintln!("stored packet: {packet} B + payload; session: {session} B + rooms and data");
    }
}
