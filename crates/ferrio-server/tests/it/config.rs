//! Configuration layering: file < environment < flags; unknown keys and invalid values are
//! errors naming the key and where its value came from.

use std::path::PathBuf;

use ferrio_server::config::{ConfigError, Inputs, Settings, Source};
use toml::Value;

use crate::support::*;

fn load(
    file: Option<PathBuf>,
    env: &[(&str, &str)],
    flags: Vec<(Vec<&'static str>, Value, &'static str)>,
) -> Result<Settings, ConfigError> {
    Settings::load(Inputs {
        file,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        flags,
    })
    .map(|l| l.settings)
}

#[test]
fn layers_override_in_order() {
    let dir = TempDir::new("layers");
    let file = dir.write(
        "f.toml",
        "listen = \"127.0.0.1:1111\"\nping_interval = \"5s\"\n[limits]\nevent_rate = 7\nmax_rooms_per_socket = 9\n",
    );
    let s = load(Some(file.clone()), &[], vec![]).unwrap();
    assert_eq!(s.listen.port(), 1111);
    assert_eq!(s.ping_interval.0.as_millis(), 5000);
    assert_eq!(s.limits.event_rate, Some(7));

    let env = [
        ("FERRIO_LISTEN", "127.0.0.1:2222"),
        ("FERRIO_LIMITS__EVENT_RATE", "8"),
        ("FERRIO_PING_INTERVAL", "1500"),
        (
            "FERRIO_ORIGIN__ALLOWED",
            "https://a.example.com, https://*.example.org",
        ),
        ("FERRIO_AUTH__SECRET", "0123456789"),
        ("FERRIO_AUTH__SECRET", "01234567890123456789012345678901"),
    ];
    let s = load(Some(file.clone()), &env[..5], vec![]);
    assert!(s.is_err(), "a 10-byte secret is too short");
    let env = [env[0], env[1], env[2], env[3], env[5]];
    let s = load(Some(file.clone()), &env, vec![]).unwrap();
    assert_eq!(s.listen.port(), 2222);
    assert_eq!(s.limits.event_rate, Some(8));
    assert_eq!(s.limits.max_rooms_per_socket, 9, "the file's other keys stay");
    assert_eq!(
        s.ping_interval.0.as_millis(),
        1500,
        "a bare number is milliseconds"
    );
    assert_eq!(
        s.origin.allowed.unwrap().0,
        vec!["https://a.example.com", "https://*.example.org"]
    );
    assert_eq!(s.auth.secret.as_deref(), Some("01234567890123456789012345678901"));
    assert_eq!(
        s.origin.allow_missing,
        Some(false),
        "authentication on: no Origin-less clients by default"
    );

    let s = load(
        Some(file),
        &env,
        vec![(vec!["listen"], Value::String("127.0.0.1:3333".into()), "--listen")],
    )
    .unwrap();
    assert_eq!(s.listen.port(), 3333);
}

#[test]
fn errors_name_the_key_and_its_source() {
    let dir = TempDir::new("errors");
    let file = dir.write("f.toml", "[limits]\nmax_conections = 5\n");
    let e = load(Some(file.clone()), &[], vec![]).unwrap_err();
    assert_eq!(e.key, "limits.max_conections");
    assert_eq!(e.source, Source::File(file.clone()));
    assert!(e.to_string().contains("did you mean `max_connections`"), "{e}");

    let file = dir.write("g.toml", "ping_timeout = \"soon\"\n");
    let e = load(Some(file.clone()), &[], vec![]).unwrap_err();
    assert_eq!(e.key, "ping_timeout");
    assert_eq!(e.source, Source::File(file));

    let e = load(None, &[("FERRIO_LIMITS__EVENT_BURST", "many")], vec![]).unwrap_err();
    assert_eq!(e.key, "limits.event_burst");
    assert_eq!(e.source, Source::Env("FERRIO_LIMITS__EVENT_BURST".into()));

    let e = load(None, &[("FERRIO_AUTH__SECRT", "x")], vec![]).unwrap_err();
    assert_eq!(e.key, "auth.secrt");
    let e = load(None, &[("FERRIO_LISTN", "x")], vec![]).unwrap_err();
    assert_eq!(e.key, "listn", "a near miss of a top-level key is a typo");

    let e = load(
        None,
        &[],
        vec![(vec!["listen"], Value::String("nowhere".into()), "--listen")],
    )
    .unwrap_err();
    assert_eq!(e.source, Source::Flag("--listen".into()));

    let e = load(None, &[("FERRIO_ORIGIN__ALLOWED", "null")], vec![]).unwrap_err();
    assert_eq!(e.key, "origin.allowed[0]");
    let e = load(
        None,
        &[
            ("FERRIO_ORIGIN__ALLOWED", "*"),
            ("FERRIO_ORIGIN__CREDENTIALS", "true"),
        ],
        vec![],
    )
    .unwrap_err();
    assert_eq!(e.key, "origin.allowed[0]");
    let e = load(None, &[("FERRIO_AUTH__ALGORITHMS", "RS256")], vec![]).unwrap_err();
    assert_eq!(e.key, "auth.algorithms[0]", "RS256 without a public key");
    let e = load(None, &[("FERRIO_AUTH__JWKS_URL", "ftp://x")], vec![]).unwrap_err();
    assert_eq!(e.key, "auth.jwks_url");
    let e = load(None, &[("FERRIO_LIMITS__TRUSTED_PROXIES", "10.0.0.0/33")], vec![]).unwrap_err();
    assert_eq!(e.key, "limits.trusted_proxies[0]");
    let e = load(None, &[("FERRIO_NAMESPACES", "chat")], vec![]).unwrap_err();
    assert_eq!(e.key, "namespaces[0]");
}

#[test]
fn variables_of_other_programs_are_ignored() {
    let s = Settings::load(Inputs {
        env: vec![
            ("FERRIO_BIN".into(), "/usr/bin/ferrio".into()),
            ("FERRIO_INTEROP_BIN".into(), "/x".into()),
        ],
        ..Inputs::default()
    })
    .unwrap();
    assert_eq!(s.ignored_env, vec!["FERRIO_BIN", "FERRIO_INTEROP_BIN"]);
}

#[test]
fn development_mode_defaults() {
    let s = load(None, &[], vec![]).unwrap();
    assert!(!s.auth_enabled());
    assert_eq!(s.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(s.origin.allow_missing, Some(true));
    assert!(
        s.origin
            .allowed
            .unwrap()
            .0
            .contains(&"http://localhost:*".to_owned())
    );
}
