//! The `ferrio` command line: `serve`, `check-config` and `token`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use toml::Value;

use crate::auth::mint::{TokenRequest, mint};
use crate::config::values::parse_duration;
use crate::config::{Inputs, Loaded, LogFormat, Settings, layers::ENV_CONFIG_FILE};

#[derive(Parser, Debug)]
#[command(name = "ferrio", version, about = "A Socket.IO v4 server")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the server.
    Serve(ConfigArgs),
    /// Checks the configuration and prints it as the server would use it (secrets redacted).
    CheckConfig(ConfigArgs),
    /// Prints a token signed with the configured shared secret (for development).
    Token(TokenArgs),
}

/// Where the configuration comes from. Every key can also be set by an environment variable:
/// `FERRIO_LISTEN`, `FERRIO_AUTH__SECRET`, `FERRIO_LIMITS__MAX_CONNECTIONS`, ...
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = ENV_CONFIG_FILE)]
    config: Option<PathBuf>,
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Allow a non-loopback address without authentication.
    #[arg(long)]
    insecure: bool,
    /// URL path of the Socket.IO endpoint.
    #[arg(long)]
    path: Option<String>,
    /// Milliseconds between server pings.
    #[arg(long, value_name = "MS")]
    ping_interval: Option<u64>,
    /// Milliseconds a ping may go unanswered.
    #[arg(long, value_name = "MS")]
    ping_timeout: Option<u64>,
    /// Largest message or polling body, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_payload: Option<u64>,
    /// Milliseconds a connection may take to join a namespace.
    #[arg(long, value_name = "MS")]
    connect_timeout: Option<u64>,
    /// Transports to accept: polling,websocket.
    #[arg(long)]
    transports: Option<String>,
    /// Seconds to wait for clients to go on shutdown.
    #[arg(long, value_name = "S")]
    shutdown_timeout: Option<u64>,
    /// How log lines are written: text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// File holding the JWT shared secret (HS256/384/512).
    #[arg(long, value_name = "FILE")]
    auth_secret_file: Option<PathBuf>,
    /// PEM public key for RS*/PS*/ES*/EdDSA tokens.
    #[arg(long, value_name = "FILE")]
    auth_public_key_file: Option<PathBuf>,
    /// JWKS document URL.
    #[arg(long, value_name = "URL")]
    auth_jwks_url: Option<String>,
    /// Required token issuer (`iss`).
    #[arg(long, value_name = "ISS")]
    auth_issuer: Option<String>,
    /// Accepted token audience (`aud`); repeat for several.
    #[arg(long, value_name = "AUD")]
    auth_audience: Vec<String>,
    /// Allowed browser origin (exact, `https://*.example.com`, `http://localhost:*`); repeat.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Most connections on this node.
    #[arg(long, value_name = "N")]
    max_connections: Option<u64>,
    /// Most connections per client address.
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<u64>,
}

impl ConfigArgs {
    /// The file, the environment and these flags, in increasing precedence.
    pub fn inputs(&self) -> Inputs {
        let mut flags: Vec<(Vec<&'static str>, Value, &'static str)> = Vec::new();
        let mut flag = |path: &[&'static str], value: Value, name: &'static str| {
            flags.push((path.to_vec(), value, name));
        };
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let path = |p: &PathBuf| Value::String(p.display().to_string());
        if let Some(v) = &self.listen {
            flag(&["listen"], Value::String(v.clone()), "--listen");
        }
        if self.insecure {
            flag(&["insecure"], Value::Boolean(true), "--insecure");
        }
        if let Some(v) = &self.path {
            flag(&["path"], Value::String(v.clone()), "--path");
        }
        if let Some(v) = self.ping_interval {
            flag(&["ping_interval"], int(v), "--ping-interval");
        }
        if let Some(v) = self.ping_timeout {
            flag(&["ping_timeout"], int(v), "--ping-timeout");
        }
        if let Some(v) = self.max_payload {
            flag(&["max_payload"], int(v), "--max-payload");
        }
        if let Some(v) = self.connect_timeout {
            flag(&["connect_timeout"], int(v), "--connect-timeout");
        }
        if let Some(v) = &self.transports {
            flag(&["transports"], Value::String(v.clone()), "--transports");
        }
        if let Some(v) = self.shutdown_timeout {
            flag(&["shutdown_timeout"], int(v), "--shutdown-timeout");
        }
        if let Some(v) = &self.log_format {
            flag(&["log_format"], Value::String(v.clone()), "--log-format");
        }
        if let Some(v) = &self.auth_secret_file {
            flag(&["auth", "secret_file"], path(v), "--auth-secret-file");
        }
        if let Some(v) = &self.auth_public_key_file {
            flag(&["auth", "public_key_file"], path(v), "--auth-public-key-file");
        }
        if let Some(v) = &self.auth_jwks_url {
            flag(&["auth", "jwks_url"], Value::String(v.clone()), "--auth-jwks-url");
        }
        if let Some(v) = &self.auth_issuer {
            flag(&["auth", "issuer"], Value::String(v.clone()), "--auth-issuer");
        }
        let list = |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
        if !self.auth_audience.is_empty() {
            flag(
                &["auth", "audience"],
                list(&self.auth_audience),
                "--auth-audience",
            );
        }
        if !self.allow_origin.is_empty() {
            flag(&["origin", "allowed"], list(&self.allow_origin), "--allow-origin");
        }
        if let Some(v) = self.max_connections {
            flag(&["limits", "max_connections"], int(v), "--max-connections");
        }
        if let Some(v) = self.max_connections_per_ip {
            flag(
                &["limits", "max_connections_per_ip"],
                int(v),
                "--max-connections-per-ip",
            );
        }
        Inputs {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            flags,
        }
    }

    pub fn load(&self) -> Result<Loaded, crate::config::ConfigError> {
        Settings::load(self.inputs())
    }
}

#[derive(Args, Debug)]
struct TokenArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The user id (`sub`).
    #[arg(long)]
    sub: String,
    /// Rooms (or patterns such as `chat:*`) the user may join; comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    rooms: Vec<String>,
    /// Rooms (or patterns) the user may publish to; comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    publish: Vec<String>,
    /// Lifetime (`30s`, `15m`, `1h`; a bare number counts seconds).
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Delay before the token becomes valid (`nbf`), like --ttl.
    #[arg(long)]
    not_before: Option<String>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ferrio: {message}");
    ExitCode::FAILURE
}

/// Sends `tracing` events to stderr in `format`, at the levels `RUST_LOG` picks (`info` by
/// default). Called once the configuration is loaded, since it names the format; an error
/// loading it is printed plainly.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Already set (a second call) leaves the first in place.
    let _ = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // The event's fields beside `timestamp`, `level`, `target` and `message`.
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

/// [`fail`] once logging is set up: in JSON, the failure is a log object like every other
/// line.
fn fail_logged(format: LogFormat, message: impl std::fmt::Display) -> ExitCode {
    match format {
        LogFormat::Text => fail(message),
        LogFormat::Json => {
            tracing::error!(error = message.to_string(), "ferrio stopped");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)] // the command's output
fn print(text: &str) {
    println!("{text}");
}

/// Runs the command line.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let loaded = match args.load() {
                Ok(l) => l,
                Err(e) => return fail(format!("invalid configuration: {e}")),
            };
            let format = loaded.settings.log_format;
            init_logging(format);
            let reload: crate::server::Reload = Box::new(move || args.load());
            match crate::server::serve_reloadable(loaded, Some(reload)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail_logged(format, e),
            }
        }
        Command::CheckConfig(args) => match args.load() {
            Ok(loaded) => {
                init_logging(loaded.settings.log_format);
                for name in &loaded.ignored_env {
                    tracing::warn!(
                        variable = name.as_str(),
                        "ignoring an environment variable that names no configuration key"
                    );
                }
                if let Err(e) = crate::server::check_exposure(&loaded.settings) {
                    return fail(e);
                }
                let mode = if loaded.settings.auth_enabled() {
                    "# authentication: on"
                } else {
                    "# authentication: off (development mode: loopback only)"
                };
                print(&format!(
                    "{mode}\n{}",
                    loaded.settings.to_redacted_toml().trim_end()
                ));
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("invalid configuration: {e}")),
        },
        Command::Token(args) => {
            let loaded = match args.config.load() {
                Ok(l) => l,
                Err(e) => return fail(format!("invalid configuration: {e}")),
            };
            init_logging(loaded.settings.log_format);
            let seconds = std::time::Duration::from_secs(1);
            let ttl = match parse_duration(&args.ttl, seconds) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return fail("--ttl must be positive"),
                Err(e) => return fail(format!("--ttl: {e}")),
            };
            let not_before = match args.not_before.as_deref().map(|s| parse_duration(s, seconds)) {
                None => 0,
                Some(Ok(d)) => d.as_secs(),
                Some(Err(e)) => return fail(format!("--not-before: {e}")),
            };
            let request = TokenRequest {
                sub: args.sub,
                rooms: args.rooms,
                publish: args.publish,
                ttl,
                not_before,
            };
            match mint(&loaded.settings, &loaded.layers, &request) {
                Ok(token) => {
                    print(&token);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
