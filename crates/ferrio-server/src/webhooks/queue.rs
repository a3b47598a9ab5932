//! The bounded event queue: numbers events in the order they are queued, drops (and still
//! numbers) what does not fit, so a backend sees every loss as a gap.

use std::collections::VecDeque;
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use tokio::time::Instant;

/// One event as the backend receives it.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub kind: &'static str,
    /// Unix milliseconds when it was queued.
    pub time: u64,
    pub fields: Map<String, Value>,
    /// What it counts against the queue's byte limit.
    pub size: usize,
}

/// Roughly how many bytes `value` takes as JSON, without writing it (strings and keys by their
/// length, plus a little for every value's punctuation).
pub fn approx_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| approx_size(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + approx_size(v))
                .sum::<usize>()
        }
    }
}

/// The frame of an event (`seq`, `type`, `time` and punctuation).
const FRAME_SIZE: usize = 64;

/// What an event with these fields counts against the byte limits (computed before the
/// queue's lock is taken).
pub fn event_size(fields: &Map<String, Value>) -> usize {
    FRAME_SIZE
        + fields
            .iter()
            .map(|(k, v)| k.len() + 4 + approx_size(v))
            .sum::<usize>()
}

/// A batch stops growing at about this many bytes (one larger event still goes, alone), so
/// requests stay under common proxy body limits (nginx's default is 1 MiB).
pub const BATCH_BYTES: usize = 512 * 1024;

const RESERVED: [&str; 3] = ["seq", "type", "time"];

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("type", self.kind)?;
        map.serialize_entry("time", &self.time)?;
        for (k, v) in &self.fields {
            if !RESERVED.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// The body of one delivery request.
#[derive(Debug, serde::Serialize)]
pub struct Batch<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub instance: &'a str,
    pub events: &'a [Event],
}

/// At most one log line per this, however many events are dropped.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Events waiting for the sender.
#[derive(Debug)]
pub struct Queue {
    events: VecDeque<Event>,
    capacity: usize,
    /// Bytes the queued events hold at most, and hold now.
    max_bytes: usize,
    bytes: usize,
    next_seq: u64,
    /// Drops not logged yet, and when the last line was.
    unlogged_drops: u64,
    last_warn: Option<Instant>,
}

impl Queue {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity,
            max_bytes,
            bytes: 0,
            next_seq: 1,
            unlogged_drops: 0,
            last_warn: None,
        }
    }

    /// Queues an event with the next sequence number. `Err` when full (by count or bytes), with the number of
    /// drops to log now (zero while the last line is recent).
    pub fn push(
        &mut self,
        kind: &'static str,
        time: u64,
        fields: Map<String, Value>,
        size: usize,
    ) -> Result<(), u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() >= self.capacity || self.bytes + size > self.max_bytes {
            self.unlogged_drops += 1;
            let now = Instant::now();
            if self.last_warn.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
                return Err(0);
            }
            self.last_warn = Some(now);
            return Err(std::mem::take(&mut self.unlogged_drops));
        }
        self.bytes += size;
        self.events.push_back(Event {
            seq,
            kind,
            time,
            fields,
            size,
        });
        Ok(())
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Takes up to `n` events from the front, about [`BATCH_BYTES`] at most.
    pub fn take(&mut self, n: usize) -> Vec<Event> {
        let mut n = n.min(self.events.len());
        let mut bytes = 0;
        for (i, event) in self.events.iter().take(n).enumerate() {
            bytes += event.size;
            if bytes > BATCH_BYTES && i > 0 {
                n = i;
                break;
            }
        }
        let taken: Vec<Event> = self.events.drain(..n).collect();
        self.bytes -= taken.iter().map(|e| e.size).sum::<usize>();
        taken
    }
}
