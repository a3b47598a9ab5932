//! Rooms' histories kept in Redis, for the whole cluster ([`crate::RedisAdapterBuilder::history`]).
//!
//! Each room with a window (`[[history.rooms]]`) has a stream of its own,
//! `{<name>}:history:<nsp>:<room>`, where `<name>` is the stream's name in streams mode and the
//! channel prefix otherwise (the braces keep every history key in the slot of the main
//! stream on a Redis Cluster). The node that broadcasts to such a room appends the broadcast
//! there, in the entry format of the main stream (`uid`, `nsp`, `type`, `data`), trimmed to the
//! room's `size` (`MAXLEN`; what outlived the `ttl` goes when the room is read, and `PEXPIRE`
//! removes a room that fell silent).
//!
//! In streams mode the main stream's `XADD` and the rooms' appends are one script, so a room's
//! entry has the main entry's id: a history offset is the offset clients got with the message
//! (unless the room's stream already holds a newer id, after the main stream was reset: then
//! the room's next own id). In the classic and sharded formats each room's ids are its own.
//!
//! Every trim records the newest id it deleted as the stream's `max-deleted-entry-id`
//! (`XSETID`, Redis 7.0), so a read (which first drops what outlived the `ttl`) knows whether
//! anything after `since` is gone.

use std::sync::Arc;
use std::time::Duration;

use ferrio::adapter::BoxFuture;
use ferrio::proto::socket::{Packet, PacketType};
use ferrio::{BroadcastOptions, History, HistoryError, HistoryMessage, RoomWindow, Sid, parse_log_id};
use redis::Value;
use serde_json::Value as Json;

use crate::link::{Link, value_text};
use crate::streams;

/// Appends one broadcast: to the main stream first when `ARGV[1]` (its `MAXLEN ~`) is not
/// empty, then to each room's stream, under the main entry's id (or, without a main stream,
/// or when a room's stream already holds a newer id, under the next id of that room's own).
/// `ARGV[2]` is the number of rooms, then `size, ttl_ms` per room, then the entry's fields.
/// Each room's stream keeps its newest `size` entries and records the newest id it dropped as
/// its `max-deleted-entry-id` (trimming alone does not); entries older than the ttl are
/// dropped when the room is read. A key that is not a stream fails the whole script before
/// anything is written. Answers the main entry's id (the first room's without one).
const WRITE: &str = r"
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('history key ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
local id, first, n = nil, 1, tonumber(ARGV[2])
local fields = {}
for i = 3 + 2 * n, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[1] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
  first = 2
end
local answer = id
for i = first, #KEYS do
  local key, r = KEYS[i], i - first
  local size, ttl = tonumber(ARGV[3 + 2 * r]), ARGV[4 + 2 * r]
  local len, gone = redis.call('XLEN', key), nil
  if len >= size then
    local old = redis.call('XRANGE', key, '-', '+', 'COUNT', len - size + 1)
    gone = old[#old][1]
  end
  local added = nil
  if id then
    added = redis.pcall('XADD', key, 'MAXLEN', size, id, unpack(fields))
    if type(added) == 'table' and added.err then added = nil end
  end
  if not added then
    added = redis.call('XADD', key, 'MAXLEN', size, '*', unpack(fields))
  end
  answer = answer or added
  if gone then redis.call('XSETID', key, added, 'MAXDELETEDID', gone) end
  redis.call('PEXPIRE', key, ttl)
end
return answer
";

/// Reads a room's stream: `ARGV` is `since` (empty for none), `limit`, `ttl_ms`. Answers
/// `{deleted, now_ms, entries}`: the first `limit` after `since`, oldest first, or without
/// `since` the newest `limit`, newest first; `deleted` is the newest id deleted from the
/// stream (`0-0` for none), empty when there is no stream.
const READ: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bound = tostring(math.max(0, now - tonumber(ARGV[3]))) .. '-0'
local expired = redis.call('XREVRANGE', KEYS[1], '(' .. bound, '-', 'COUNT', 1)
if #expired > 0 then
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  redis.call('XTRIM', KEYS[1], 'MINID', bound)
  redis.call('XSETID', KEYS[1], top[1][1], 'MAXDELETEDID', expired[1][1])
end
local deleted = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
  end
end
if ARGV[1] == '' then
  return {deleted, tostring(now), redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])}
end
return {deleted, tostring(now), redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
";

/// Which rooms keep a history, and under which keys.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub windows: Vec<RoomWindow>,
    /// `<name>` of the keys.
    pub base: String,
}

/// One room stream a broadcast is appended to.
#[derive(Debug)]
pub(crate) struct Target {
    pub key: String,
    size: usize,
    ttl_ms: u64,
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl Rules {
    fn window(&self, room: &str) -> Option<&RoomWindow> {
        if room.parse::<Sid>().is_ok() {
            return None;
        }
        self.windows.iter().find(|w| w.matches(room))
    }

    /// The namespace goes with its length, so no two namespace/room pairs share a key; the
    /// braces hold the base without braces (a Redis Cluster hashes what is inside).
    fn key(&self, nsp: &str, room: &str) -> String {
        let tag: String = self.base.chars().filter(|c| !matches!(c, '{' | '}')).collect();
        let tag = if tag.is_empty() { "ferrio" } else { tag.as_str() };
        format!("{{{tag}}}:history:{}:{nsp}:{room}", nsp.len())
    }

    /// The room streams a broadcast goes to: none unless it is kept for recovery (an event
    /// without an ack, not volatile, not local) and one of its rooms has a window.
    pub(crate) fn targets(&self, nsp: &str, packet: &Packet, opts: &BroadcastOptions) -> Vec<Target> {
        let kept = matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent)
            && packet.id.is_none()
            && !opts.flags.volatile
            && !opts.flags.local
            && matches!(packet.data, Some(Json::Array(_)));
        if !kept || self.windows.is_empty() {
            return Vec::new();
        }
        opts.rooms
            .iter()
            .filter_map(|room| {
                let w = self.window(room)?;
                Some(Target {
                    key: self.key(nsp, room),
                    size: w.size.max(1),
                    ttl_ms: ttl_ms(w.ttl),
                })
            })
            .collect()
    }
}

/// The script that appends an entry with `fields` to the rooms' streams, after the main
/// stream (`stream` and its `MAXLEN ~`) when there is one. It answers the entry's id.
pub(crate) fn write(
    main: Option<(&str, usize)>,
    rooms: &[Target],
    fields: &[(&'static str, String)],
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WRITE).arg(rooms.len() + usize::from(main.is_some()));
    if let Some((stream, _)) = main {
        cmd.arg(stream);
    }
    for room in rooms {
        cmd.arg(&room.key);
    }
    cmd.arg(main.map_or(String::new(), |(_, max_len)| max_len.to_string()))
        .arg(rooms.len());
    for room in rooms {
        cmd.arg(room.size).arg(room.ttl_ms);
    }
    for (field, value) in fields {
        cmd.arg(*field).arg(value);
    }
    cmd
}

/// A namespace's histories, read from Redis.
pub(crate) struct RedisHistory {
    pub link: Arc<Link>,
    pub rules: Rules,
    pub nsp: String,
}

impl ferrio::HistoryStore for RedisHistory {
    fn read(
        &self,
        room: &str,
        since: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'static, Result<History, HistoryError>> {
        let Some(window) = self.rules.window(room) else {
            return Box::pin(std::future::ready(Err(HistoryError::NotKept)));
        };
        let since = match since.map(|s| parse_log_id(s).map(|id| (s.to_owned(), id))) {
            Some(None) => return Box::pin(std::future::ready(Err(HistoryError::UnknownOffset))),
            Some(Some(since)) => Some(since),
            None => None,
        };
        let ttl = ttl_ms(window.ttl);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(READ)
            .arg(1)
            .arg(self.rules.key(&self.nsp, room))
            .arg(since.as_ref().map_or("", |(s, _)| s.as_str()))
            .arg(limit)
            .arg(ttl);
        let (link, nsp) = (self.link.clone(), self.nsp.clone());
        Box::pin(async move {
            let answer = link.query(&cmd).await.map_err(|e| {
                tracing::debug!(error = %e, "history read failed");
                HistoryError::Unavailable
            })?;
            let Value::Array(parts) = answer else {
                return Err(HistoryError::Unavailable);
            };
            let [deleted, now, entries] = parts.as_slice() else {
                return Err(HistoryError::Unavailable);
            };
            let deleted = value_text(deleted).unwrap_or_default();
            let now: u64 = value_text(now).and_then(|t| t.parse().ok()).unwrap_or(u64::MAX);
            let complete = match &since {
                None => true,
                // Anything after `since` that outlived the ttl is gone.
                Some((_, since)) if since.0.saturating_add(ttl) < now => false,
                Some((_, since)) => match deleted.as_str() {
                    "" => true,
                    id => parse_log_id(id).is_some_and(|d| d <= *since),
                },
            };
            let mut messages: Vec<HistoryMessage> = streams::entries_in(entries)
                .into_iter()
                .filter_map(|value| {
                    let entry = streams::parse_entry(value).ok()?;
                    if entry.nsp != nsp {
                        return None;
                    }
                    let mut logged = streams::recoverable(&entry, &nsp)?;
                    if let Some(Json::Array(args)) = &mut logged.packet.data {
                        args.push(Json::String(logged.id.clone()));
                    }
                    Some(HistoryMessage {
                        offset: logged.id,
                        packet: logged.packet,
                        except: logged.opts.except.into_iter().collect(),
                    })
                })
                .collect();
            if since.is_none() {
                messages.reverse();
            }
            Ok(History { messages, complete })
        })
    }
}
