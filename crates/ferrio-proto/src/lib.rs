//! Sans-IO protocol core of ferrio: Engine.IO v4 and Socket.IO v5 codecs and the Engine.IO
//! session state machine.
//!
//! Nothing here performs IO or reads a clock. Decoders take bytes and return packets or a
//! [`ProtocolError`] that names the violation; the session state machine takes `now` as an
//! argument and tells its driver what to do next. The server (`ferrio`) and the client
//! (`ferrio-client`) drive these types against real sockets.

pub mod backoff;
pub mod engine;
pub mod error;
pub mod payload;
pub mod session;
pub mod socket;
pub mod ws;

pub use error::ProtocolError;
pub use payload::Payload;
