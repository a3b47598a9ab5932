//! The [`Client`]: one Engine.IO connection shared by its sockets (namespaces), and the
//! manager task that opens it, reconnects it with backoff, and routes what arrives.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferrio_proto::socket::{Decoder, Packet};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

use crate::config::{Auth, ClientOptions, SocketOptions, Transport};
use crate::engine::{self, EngineEvent, EngineMessage, Session};
use crate::error::Error;
use crate::payload::Event;
use crate::queue::QueueLimits;
use crate::socket::{self, AnyHandler, ConnHandle, Handler, Socket, SocketShared};
use crate::state::DisconnectReason;
use ferrio_proto::backoff::{Attempts, Backoff};

/// What sockets and handles ask of the manager.
#[derive(Debug)]
pub(crate) enum Command {
    /// A socket wants to be connected.
    Connect(Arc<SocketShared>),
    /// A socket left; close the connection if none is left.
    Disconnect,
    /// Every handle is gone, or [`Client::close`] was called.
    Close,
}

/// Closes the client when the last handle ([`Client`] or [`Socket`]) is dropped.
#[derive(Debug)]
pub(crate) struct Lifeline {
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

struct ManagerShared {
    options: ClientOptions,
    sockets: Mutex<Vec<Arc<SocketShared>>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl ManagerShared {
    fn active(&self) -> Vec<Arc<SocketShared>> {
        self.sockets
            .lock()
            .iter()
            .filter(|s| s.is_active())
            .cloned()
            .collect()
    }

    fn any_active(&self) -> bool {
        self.sockets.lock().iter().any(|s| s.is_active())
    }

    fn find(&self, nsp: &str) -> Option<Arc<SocketShared>> {
        self.sockets.lock().iter().find(|s| s.nsp == nsp).cloned()
    }
}

/// A Socket.IO client: one connection (WebSocket, or long-polling upgraded to WebSocket when
/// possible) to a server, shared by any number of namespaces.
///
/// The connection opens when the first socket connects, reconnects with exponential backoff
/// and jitter when it is lost, and closes when no socket wants it any more, on
/// [`Client::close`], or when every handle is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use ferrio_client::{Client, ConnectionState};
///
/// let client = Client::builder("http://127.0.0.1:3000")
///     .reconnection_delay(Duration::from_millis(500))
///     .reconnection_delay_max(Duration::from_secs(10))
///     .build()?;
/// let chat = client.socket("/").connect();
/// let admin = client.socket("/admin").auth(serde_json::json!({"token": "s3cret"})).connect();
///
/// let mut changes = chat.state_changes();
/// while let Some(change) = changes.next().await {
///     match change.state {
///         ConnectionState::Connected => println!("connected as {:?}", chat.id()),
///         ConnectionState::Reconnecting { attempt } => println!("reconnecting ({attempt})"),
///         other => println!("{other:?}"),
///     }
/// }
/// # drop(admin);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<ManagerShared>,
    life: Arc<Lifeline>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with default options for a server URL such as `http://127.0.0.1:3000`.
    /// Must be called within a tokio runtime.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::with_options(ClientOptions::new(url)?)
    }

    /// A builder for a server URL.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            options: ClientOptions::new(url),
        }
    }

    /// A client with these options. Must be called within a tokio runtime.
    pub fn with_options(options: ClientOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(ManagerShared {
            options,
            sockets: Mutex::new(Vec::new()),
            commands: commands.clone(),
        });
        runtime.spawn(manage(shared.clone(), rx));
        Ok(Self {
            shared,
            life: Arc::new(Lifeline { commands }),
        })
    }

    /// Starts building the socket of namespace `nsp` (`"/"` is the main namespace).
    pub fn socket(&self, nsp: &str) -> SocketBuilder {
        let nsp = if nsp.starts_with('/') {
            nsp.to_owned()
        } else {
            format!("/{nsp}")
        };
        SocketBuilder {
            client: self.clone(),
            nsp,
            options: SocketOptions::default(),
            handlers: Vec::new(),
            any: Vec::new(),
        }
    }

    /// Closes the connection and every socket for good: pending acks fail with
    /// [`AckError::Closed`](crate::AckError::Closed), states become `Disconnected`.
    pub fn close(&self) {
        let _ = self.shared.commands.send(Command::Close);
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.shared.options
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    options: Result<ClientOptions, Error>,
}

impl ClientBuilder {
    fn with(mut self, f: impl FnOnce(&mut ClientOptions)) -> Self {
        if let Ok(options) = &mut self.options {
            f(options);
        }
        self
    }

    /// The Socket.IO path (default `/socket.io/`).
    pub fn path(self, path: &str) -> Self {
        self.with(|o| o.path = path.to_owned())
    }

    /// Transports in order (default polling, then WebSocket by upgrade).
    pub fn transports(self, transports: &[Transport]) -> Self {
        self.with(|o| o.transports = transports.to_vec())
    }

    /// Whether polling may upgrade to WebSocket (default true).
    pub fn upgrade(self, upgrade: bool) -> Self {
        self.with(|o| o.upgrade = upgrade)
    }

    /// Whether to reconnect (default true). Without reconnection every disconnection is
    /// final: the socket stays `Disconnected` until [`Socket::connect`] is called.
    pub fn reconnection(self, reconnection: bool) -> Self {
        self.with(|o| o.reconnection = reconnection)
    }

    /// Attempts before giving up (default unlimited).
    pub fn reconnection_attempts(self, attempts: u32) -> Self {
        self.with(|o| o.backoff.max_attempts = Some(attempts))
    }

    /// Delay before the first reconnection attempt (default 1 s).
    pub fn reconnection_delay(self, delay: Duration) -> Self {
        self.with(|o| o.backoff.initial = delay)
    }

    /// Longest delay between attempts (default 5 s).
    pub fn reconnection_delay_max(self, delay: Duration) -> Self {
        self.with(|o| o.backoff.max = delay)
    }

    /// Jitter, 0 to 1 (default 0.5).
    pub fn randomization_factor(self, factor: f64) -> Self {
        self.with(|o| o.backoff.randomization = factor.clamp(0.0, 1.0))
    }

    /// The whole backoff policy at once.
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.with(|o| o.backoff = backoff)
    }

    /// How long opening a connection may take (default 20 s).
    pub fn connect_timeout(self, limit: Duration) -> Self {
        self.with(|o| o.connect_timeout = limit)
    }

    /// Adds a query parameter to every request.
    pub fn query(self, key: &str, value: &str) -> Self {
        self.with(|o| o.query.push((key.to_owned(), value.to_owned())))
    }

    /// Adds an HTTP header to every request.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.with(|o| o.headers.push((name.to_owned(), value.to_owned())))
    }

    /// Builds the client (within a tokio runtime).
    pub fn build(self) -> Result<Client, Error> {
        Client::with_options(self.options?)
    }
}

/// Builds a [`Socket`]: its auth payload, its ack and queue policies, and the handlers that
/// must be in place before the first event can arrive.
pub struct SocketBuilder {
    client: Client,
    nsp: String,
    options: SocketOptions,
    handlers: Vec<(String, Handler)>,
    any: Vec<AnyHandler>,
}

impl fmt::Debug for SocketBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketBuilder")
            .field("nsp", &self.nsp)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SocketBuilder {
    /// A fixed CONNECT auth payload (an object).
    pub fn auth(mut self, auth: Value) -> Self {
        self.options.auth = Auth::Static(auth);
        self
    }

    /// An auth payload fetched before every connection and reconnection, e.g. a fresh token.
    ///
    /// ```no_run
    /// # async fn run(client: ferrio_client::Client) {
    /// use serde_json::json;
    ///
    /// async fn fetch_token() -> String { "t0k3n".into() }
    ///
    /// let socket = client
    ///     .socket("/")
    ///     .auth_with(|| async { json!({ "token": fetch_token().await }) })
    ///     .connect();
    /// # }
    /// ```
    pub fn auth_with<F, Fut>(mut self, fetch: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Value> + Send + 'static,
    {
        self.options.auth = Auth::Callback(Arc::new(move || Box::pin(fetch())));
        self
    }

    /// `retries` (see [`SocketOptions::retries`]).
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retries = Some(retries);
        self
    }

    /// `ackTimeout`: the default timeout of acks (and of each try, with retries).
    pub fn ack_timeout(mut self, limit: Duration) -> Self {
        self.options.ack_timeout = Some(limit);
        self
    }

    /// Bounds of the offline and retry queues.
    pub fn queue(mut self, limits: QueueLimits) -> Self {
        self.options.queue = limits;
        self
    }

    /// All socket options at once.
    pub fn options(mut self, options: SocketOptions) -> Self {
        self.options = options;
        self
    }

    /// Handles an event (see [`Socket::on`]).
    pub fn on(mut self, event: &str, handler: impl Fn(Event) + Send + Sync + 'static) -> Self {
        self.handlers.push((event.to_owned(), Arc::new(handler)));
        self
    }

    /// Handles an event with a typed first argument (see [`Socket::on_typed`]).
    pub fn on_typed<T, F>(self, event: &str, handler: F) -> Self
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        self.on(event, socket::typed(handler))
    }

    /// Sees every event (see [`Socket::on_any`]).
    pub fn on_any(mut self, handler: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.any.push(Arc::new(handler));
        self
    }

    /// Creates the socket and starts connecting it. A namespace has one socket per client:
    /// if it exists already, that socket gets the handlers (its options stay) and is
    /// connected again if it had been disconnected.
    pub fn connect(self) -> Socket {
        let manager = &self.client.shared;
        let shared = {
            let mut sockets = manager.sockets.lock();
            match sockets.iter().find(|s| s.nsp == self.nsp) {
                Some(existing) => existing.clone(),
                None => {
                    let created = SocketShared::new(self.nsp.clone(), self.options, manager.commands.clone());
                    sockets.push(created.clone());
                    created
                }
            }
        };
        for (event, handler) in self.handlers {
            socket::add_handler(&shared, event, handler);
        }
        for handler in self.any {
            socket::add_any_handler(&shared, handler);
        }
        let socket = Socket {
            shared,
            _life: self.client.life.clone(),
        };
        socket.connect();
        socket
    }
}

/// How a session ended.
enum SessionEnd {
    /// [`Command::Close`]: the client is done.
    Shutdown,
    /// No socket wants the connection any more; it was closed.
    Idle,
    /// Lost; reconnect.
    Lost(DisconnectReason),
}

/// The manager: opens the connection, reconnects it, and routes packets, until closed.
async fn manage(shared: Arc<ManagerShared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let options = shared.options.clone();
    let mut attempts = Attempts::default();
    let mut generation = 0u64;
    let mut reconnecting = false;
    'outer: loop {
        // Wait until a socket wants a connection.
        while !shared.any_active() {
            reconnecting = false;
            attempts.reset();
            match commands.recv().await {
                None | Some(Command::Close) => break 'outer,
                Some(_) => {}
            }
        }
        if reconnecting {
            for socket in shared.active() {
                socket.set_reconnecting(attempts.current());
            }
        }
        let opening = timeout(options.connect_timeout, engine::open(&options));
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                result = &mut opening => break result,
                command = commands.recv() => match command {
                    None | Some(Command::Close) => break 'outer,
                    Some(_) if !shared.any_active() => continue 'outer,
                    Some(_) => {}
                },
            }
        };
        let reason = match opened {
            Ok(Ok(session)) => {
                attempts.reset();
                reconnecting = false;
                generation += 1;
                match run_session(&shared, session, generation, &mut commands).await {
                    SessionEnd::Shutdown => break 'outer,
                    SessionEnd::Idle => continue 'outer,
                    SessionEnd::Lost(reason) => reason,
                }
            }
            Ok(Err(e)) => DisconnectReason::TransportError(e),
            Err(_) => DisconnectReason::TransportError("connect timeout".into()),
        };
        tracing::debug!(%reason, "connection lost or not opened");
        for socket in shared.active() {
            socket.on_connection_lost(reason.clone());
        }
        if !options.reconnection {
            for socket in shared.active() {
                socket.deactivate(None);
            }
            continue;
        }
        let Some(delay) = attempts.next_delay(&options.backoff, rand::random::<f64>()) else {
            for socket in shared.active() {
                socket.deactivate(Some(DisconnectReason::ReconnectFailed));
            }
            continue;
        };
        reconnecting = true;
        let wait = sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                command = commands.recv() => match command {
                    None | Some(Command::Close) => break 'outer,
                    Some(_) if !shared.any_active() => continue 'outer,
                    Some(_) => {}
                },
            }
        }
    }
    let sockets = std::mem::take(&mut *shared.sockets.lock());
    for socket in sockets {
        socket.shut_down();
    }
}

/// Runs one open session: sends each active socket's CONNECT, routes packets, and follows
/// commands, until the session ends.
async fn run_session(
    shared: &ManagerShared,
    mut session: Session,
    generation: u64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> SessionEnd {
    tracing::debug!(sid = %session.info.sid, generation, "engine.io session open");
    let conn = ConnHandle {
        tx: session.outbound.clone(),
        generation,
    };
    for socket in shared.active() {
        socket.start_connect(&conn);
    }
    let mut decoder = Decoder::default();
    loop {
        tokio::select! {
            event = session.events.recv() => {
                let message = match event {
                    Some(EngineEvent::Message(message)) => message,
                    Some(EngineEvent::Closed(reason)) => return SessionEnd::Lost(reason),
                    None => return SessionEnd::Lost(DisconnectReason::TransportClose),
                };
                let decoded = match message {
                    EngineMessage::Text(text) => decoder.decode_text(&text),
                    EngineMessage::Binary(bytes) => decoder.decode_binary(bytes),
                };
                match decoded {
                    Ok(Some(packet)) => route(shared, packet, &conn),
                    Ok(None) => {}
                    Err(e) => {
                        session.close().await;
                        return SessionEnd::Lost(DisconnectReason::ParseError(e.to_string()));
                    }
                }
                if !shared.any_active() {
                    session.close().await;
                    return SessionEnd::Idle;
                }
            }
            command = commands.recv() => match command {
                None | Some(Command::Close) => {
                    session.close().await;
                    return SessionEnd::Shutdown;
                }
                Some(Command::Connect(socket)) => socket.start_connect(&conn),
                Some(Command::Disconnect) => {
                    if !shared.any_active() {
                        session.close().await;
                        return SessionEnd::Idle;
                    }
                }
            },
        }
    }
}

fn route(shared: &ManagerShared, packet: Packet, conn: &ConnHandle) {
    match shared.find(&packet.nsp) {
        Some(socket) => socket.on_packet(packet, conn),
        None => tracing::debug!(nsp = %packet.nsp, "packet for a namespace with no socket"),
    }
}
