//! The snapshots the dashboard shows: this node's connections, sockets and rooms, and the
//! rates of events received and packets sent, published to the admin namespace (this node's
//! viewers only) every interval. A short history of the main series is kept so a new viewer
//! draws its charts at once.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrio::{Io, Socket};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The event a new viewer gets with the recent history.
pub const HISTORY_EVENT: &str = "history";
/// The event each snapshot goes out as.
pub const SNAPSHOT_EVENT: &str = "snapshot";

/// How far back the charts go.
const HISTORY: Duration = Duration::from_secs(120);
/// Rooms listed, largest first.
const TOP_ROOMS: usize = 10;
/// Namespaces listed, most sockets first.
const TOP_NAMESPACES: usize = 20;

/// The library's counters, read from the Prometheus recorder's text.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counters {
    pub events: f64,
    pub packets: f64,
    pub polling: f64,
    pub websocket: f64,
}

impl Counters {
    /// Reads `ferrio_events_received_total`, `ferrio_packets_sent_total` and
    /// `ferrio_connections{transport=...}` from the text format (absent series count zero).
    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let slot = match series {
                "ferrio_events_received_total" => &mut c.events,
                "ferrio_packets_sent_total" => &mut c.packets,
                r#"ferrio_connections{transport="polling"}"# => &mut c.polling,
                r#"ferrio_connections{transport="websocket"}"# => &mut c.websocket,
                _ => continue,
            };
            *slot = value;
        }
        c
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn per_second(now: f64, before: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    // One decimal is all a dashboard shows.
    ((now - before).max(0.0) / secs * 10.0).round() / 10.0
}

/// Publishes snapshots and keeps the recent history.
#[derive(Debug)]
pub struct Publisher {
    namespace: String,
    interval: Duration,
    /// Points of the charts, oldest first.
    history: Mutex<VecDeque<Value>>,
    /// The last snapshot sent, for a new viewer.
    latest: Mutex<Option<Value>>,
}

impl Publisher {
    pub fn new(namespace: String, interval: Duration) -> Self {
        Self {
            namespace,
            interval,
            history: Mutex::new(VecDeque::new()),
            latest: Mutex::new(None),
        }
    }

    fn capacity(&self) -> usize {
        let n = HISTORY.as_millis() / self.interval.as_millis().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).clamp(10, 1200)
    }

    /// Sends a new viewer the history and the latest snapshot.
    pub fn greet(&self, socket: &Socket) {
        let history: Vec<Value> = self.history.lock().iter().cloned().collect();
        let _ = socket.emit(HISTORY_EVENT, Value::Array(history));
        if let Some(latest) = self.latest.lock().clone() {
            let _ = socket.emit(SNAPSHOT_EVENT, latest);
        }
    }

    /// Samples every interval until the task is aborted.
    pub async fn run(&self, io: Io, metrics: Option<PrometheusHandle>, node: String) {
        let started = Instant::now();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<(Instant, Counters)> = None;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let counters = metrics.as_ref().map(|m| Counters::parse(&m.render()));
            let rates = match (counters, previous) {
                (Some(c), Some((at, before))) => Some((
                    per_second(c.events, before.events, now - at),
                    per_second(c.packets, before.packets, now - at),
                )),
                _ => None,
            };
            previous = counters.map(|c| (now, c));
            let snapshot = self.snapshot(&io, counters, rates, &node, now - started);
            self.record(&snapshot);
            let Some(admin) = io.of(&self.namespace) else {
                continue;
            };
            if admin.socket_count() == 0 {
                *self.latest.lock() = None;
                continue;
            }
            // This node's viewers only, and never queued behind a slow one.
            let _ = admin
                .broadcast()
                .local()
                .volatile()
                .emit(SNAPSHOT_EVENT, snapshot.clone());
            *self.latest.lock() = Some(snapshot);
        }
    }

    fn record(&self, snapshot: &Value) {
        let point = json!({
            "t": snapshot["time"],
            "connections": snapshot["connections"]["clients"],
            "sockets": snapshot["sockets"],
            "events": snapshot["rates"]["events"],
            "packets": snapshot["rates"]["packets"],
        });
        let mut history = self.history.lock();
        if history.len() >= self.capacity() {
            history.pop_front();
        }
        history.push_back(point);
    }

    /// What the page shows of this node now.
    pub fn snapshot(
        &self,
        io: &Io,
        counters: Option<Counters>,
        rates: Option<(f64, f64)>,
        node: &str,
        uptime: Duration,
    ) -> Value {
        let mut viewers = 0;
        let mut sockets = 0;
        let mut rooms = 0;
        let mut namespaces = Vec::new();
        let mut top: Vec<(String, String, usize)> = Vec::new();
        for ns in io.namespaces() {
            if ns.name() == self.namespace {
                viewers = ns.socket_count();
                continue;
            }
            let local = ns.adapter().local();
            let (n_sockets, n_rooms) = (ns.socket_count(), local.room_count());
            sockets += n_sockets;
            rooms += n_rooms;
            namespaces.push((ns.name().to_owned(), n_sockets, n_rooms));
            top.extend(
                local
                    .largest_rooms(TOP_ROOMS)
                    .into_iter()
                    .map(|(room, size)| (ns.name().to_owned(), room.to_string(), size)),
            );
        }
        let namespace_count = namespaces.len();
        namespaces.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        namespaces.truncate(TOP_NAMESPACES);
        top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        top.truncate(TOP_ROOMS);
        let total = io.connection_count();
        let transports = counters.map(|c| json!({ "websocket": c.websocket, "polling": c.polling }));
        json!({
            "node": node,
            "time": unix_ms(),
            "uptime": uptime.as_secs(),
            "interval": u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            "metrics": counters.is_some(),
            "connections": {
                "total": total,
                "clients": total.saturating_sub(viewers),
                "dashboard": viewers,
                "transports": transports,
            },
            "sockets": sockets,
            "rooms": rooms,
            "namespace_count": namespace_count,
            "namespaces": namespaces
                .into_iter()
                .map(|(name, sockets, rooms)| json!({ "name": name, "sockets": sockets, "rooms": rooms }))
                .collect::<Vec<_>>(),
            "top_rooms": top
                .into_iter()
                .map(|(ns, room, size)| json!({ "namespace": ns, "room": room, "sockets": size }))
                .collect::<Vec<_>>(),
            "rates": rates.map(|(events, packets)| json!({ "events": events, "packets": packets })),
            "totals": counters.map(|c| json!({ "events": c.events, "packets": c.packets })),
        })
    }
}
