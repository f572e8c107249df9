//! Errors of the YARN backend: typed, with their cause as `#[source]`, and
//! each saying whether trying again may help (an RM that is restarting or a
//! standby of an HA pair) or not (the RM refused what was asked).

/// What went wrong talking to YARN.
#[derive(Debug, thiserror::Error)]
pub enum YarnError {
    /// No ResourceManager of the list answered.
    #[error("no ResourceManager answered (tried {})", tried.join(", "))]
    Unreachable {
        /// The addresses tried, in order.
        tried: Vec<String>,
        /// The last failure.
        #[source]
        source: reqwest::Error,
    },
    /// A ResourceManager or NodeManager answered with an error status.
    #[error("{method} {url}: HTTP {status}: {message}")]
    Http {
        /// The HTTP method.
        method: &'static str,
        /// The URL (without the user name).
        url: String,
        /// The status code.
        status: u16,
        /// YARN's diagnostics, or the start of the body.
        message: String,
    },
    /// YARN refused a submission or change; `field` is the spec field it
    /// was about, when the diagnostics say.
    #[error("YARN refused {what}{}: {message}", field.map(|f| format!(" ({f})")).unwrap_or_default())]
    Refused {
        /// What was asked (`service muster-demo`).
        what: String,
        /// The spec field the refusal is about.
        field: Option<&'static str>,
        /// YARN's diagnostics.
        message: String,
    },
    /// An answer that does not read as expected.
    #[error("unexpected answer from {url}: {body}")]
    UnexpectedAnswer {
        /// The URL.
        url: String,
        /// The start of the body.
        body: String,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Waiting for YARN took too long.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// Containers of the service were still running after `down`.
    #[error("containers of {service} still running after it was destroyed: {}", containers.join(", "))]
    LeftBehind {
        /// The service.
        service: String,
        /// The containers.
        containers: Vec<String>,
    },
}

impl YarnError {
    /// True when trying again later may succeed: the RM unreachable,
    /// restarting, a standby (503), a gateway error, or a service read while
    /// its definition was being rewritten ([`crate::model::read_mid_rewrite`]).
    pub fn is_transient(&self) -> bool {
        match self {
            YarnError::Unreachable { .. } | YarnError::Timeout { .. } => true,
            YarnError::Http {
                status, message, ..
            } => {
                matches!(status, 502..=504)
                    || (*status == 500 && crate::model::read_mid_rewrite(message))
            }
            YarnError::Refused { .. }
            | YarnError::UnexpectedAnswer { .. }
            | YarnError::LeftBehind { .. } => false,
        }
    }
}

/// The first `n` characters of a body, for messages.
pub(crate) fn excerpt(body: &str, n: usize) -> String {
    let t = body.trim();
    match t.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_not() {
        let http = |status| YarnError::Http {
            method: "GET",
            url: "u".into(),
            status,
            message: String::new(),
        };
        assert!(http(503).is_transient());
        assert!(!http(500).is_transient());
        let mid_rewrite = YarnError::Http {
            method: "GET",
            url: "u".into(),
            status: 500,
            message: "No content to map due to end-of-input\n at [Source: ...]".into(),
        };
        assert!(mid_rewrite.is_transient());
        assert!(!http(404).is_transient());
        let refused = YarnError::Refused {
            what: "service muster-x".into(),
            field: Some("backend.queue"),
            message: "Queue root.closed is STOPPED".into(),
        };
        assert!(!refused.is_transient());
        assert_eq!(
            refused.to_string(),
            "YARN refused service muster-x (backend.queue): Queue root.closed is STOPPED"
        );
        assert_eq!(excerpt("abcdef", 3), "abc...");
        assert_eq!(excerpt(" ab ", 3), "ab");
    }
}
