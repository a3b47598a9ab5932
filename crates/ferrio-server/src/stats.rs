//! Counters of every refusal: each rejection the server makes is counted under a stable
//! label, logged in the periodic summary and at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::AuthFailure;

macro_rules! rejections {
    ($($variant:ident => $label:literal),* $(,)?) => {
        /// One kind of refusal.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Rejection {
            $($variant,)*
        }

        impl Rejection {
            pub const ALL: &'static [Rejection] = &[$(Rejection::$variant,)*];

            /// The label in logs.
            pub fn label(self) -> &'static str {
                match self {
                    $(Rejection::$variant => $label,)*
                }
            }
        }
    };
}

rejections! {
    OriginNotAllowed => "origin.not_allowed",
    OriginMissing => "origin.missing",
    NodeFull => "limits.max_connections",
    TooManyFromIp => "limits.max_connections_per_ip",
    PendingFull => "limits.max_pending_sessions",
    PendingEvicted => "limits.pending_evicted",
    TooManyPendingFromIp => "limits.max_pending_sessions_per_ip",
    BodyRefused => "limits.body",
    ConnectionRate => "limits.connection_rate",
    TooManyNamespaces => "limits.max_namespaces_per_connection",
    TooManyRooms => "limits.max_rooms",
    EventRateLimited => "limits.event_rate",
    EventFloodClosed => "limits.event_flood_closed",
    JoinForbidden => "rooms.join_forbidden",
    PublishForbidden => "rooms.publish_forbidden",
    PresenceForbidden => "rooms.presence_forbidden",
    InvalidPayload => "events.invalid_payload",
    TokenMissing => "auth.token_missing",
    TokenMalformed => "auth.token_malformed",
    AlgorithmNotAllowed => "auth.algorithm_not_allowed",
    SignatureInvalid => "auth.signature_invalid",
    TokenExpired => "auth.token_expired",
    TokenNotYetValid => "auth.token_not_yet_valid",
    IssuerInvalid => "auth.issuer_invalid",
    AudienceInvalid => "auth.audience_invalid",
    UnknownKid => "auth.unknown_kid",
    ClaimsInvalid => "auth.claims_invalid",
    SubjectMismatch => "auth.subject_mismatch",
    NamespaceForbidden => "auth.namespace_forbidden",
    ExpiredDisconnect => "auth.expired_disconnect",
    DashboardUnauthorized => "dashboard.wrong_credentials",
    DashboardTokenRefused => "dashboard.token_refused",
}

impl From<AuthFailure> for Rejection {
    fn from(f: AuthFailure) -> Self {
        match f {
            AuthFailure::TokenMissing => Rejection::TokenMissing,
            AuthFailure::TokenMalformed => Rejection::TokenMalformed,
            AuthFailure::AlgorithmNotAllowed => Rejection::AlgorithmNotAllowed,
            AuthFailure::SignatureInvalid => Rejection::SignatureInvalid,
            AuthFailure::TokenExpired => Rejection::TokenExpired,
            AuthFailure::TokenNotYetValid => Rejection::TokenNotYetValid,
            AuthFailure::IssuerInvalid => Rejection::IssuerInvalid,
            AuthFailure::AudienceInvalid => Rejection::AudienceInvalid,
            AuthFailure::UnknownKid => Rejection::UnknownKid,
            AuthFailure::ClaimsInvalid => Rejection::ClaimsInvalid,
            AuthFailure::SubjectMismatch => Rejection::SubjectMismatch,
            AuthFailure::NamespaceForbidden => Rejection::NamespaceForbidden,
        }
    }
}

/// One counter per [`Rejection`].
#[derive(Debug)]
pub struct Stats {
    counts: Vec<AtomicU64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: Rejection::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Stats {
    pub fn count(&self, r: impl Into<Rejection>) {
        let r = r.into();
        self.counts[r as usize].fetch_add(1, Ordering::Relaxed);
        crate::metrics::rejection(r, 1);
    }

    pub fn get(&self, r: Rejection) -> u64 {
        self.counts[r as usize].load(Ordering::Relaxed)
    }

    /// `label=count` for every non-zero counter, space-separated (empty when none).
    pub fn summary(&self) -> String {
        Rejection::ALL
            .iter()
            .filter_map(|&r| {
                let n = self.get(r);
                (n > 0).then(|| format!("{}={n}", r.label()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
