//! One HTTP exchange with the Resideo service, sorted into what the caller must
//! do next: use the body, fetch a new token, wait out a rate limit, or give up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use super::decode::is_rate_limit_body;
use crate::monitors::http_client as http;
use crate::monitors::MonitorError;

pub(super) const SERVICE: &str = "Resideo TCC";

#[derive(Debug)]
pub(super) enum Answer {
    Ok(Vec<u8>),
    /// HTTP 401: the token (or, at the token endpoint, the credentials) refused.
    Unauthorized(String),
    /// HTTP 429, or the API's rate-limit error body under any status.
    RateLimited {
        wait: Option<Duration>,
        detail: String,
    },
    /// Any other non-2xx answer.
    Failed {
        status: StatusCode,
        detail: String,
    },
}

/// Sends `request`; transport failures (refused connection, timeout) are link
/// errors, every HTTP answer is an [`Answer`].
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
    timeout: Duration,
    now: DateTime<Utc>,
) -> Result<Answer, MonitorError> {
    let context = format!("{SERVICE} {what}");
    let response = request
        .send()
        .await
        .map_err(|e| http::transport_error(&context, e, timeout))?;
    let status = response.status();
    let wait = http::retry_after(response.headers(), now);
    let body = response
        .bytes()
        .await
        .map_err(|e| http::transport_error(&context, e, timeout))?
        .to_vec();
    Ok(classify(status, wait, body))
}

/// The decision, apart from the I/O so it is tested on its own.
pub(super) fn classify(status: StatusCode, wait: Option<Duration>, body: Vec<u8>) -> Answer {
    if status == StatusCode::TOO_MANY_REQUESTS || (!status.is_success() && is_rate_limit_body(&body)) {
        return Answer::RateLimited {
            wait,
            detail: format!("HTTP {}: {}", status.as_u16(), http::snippet(&body)),
        };
    }
    if status.is_success() {
        return Answer::Ok(body);
    }
    let detail = http::snippet(&body);
    if status == StatusCode::UNAUTHORIZED {
        Answer::Unauthorized(detail)
    } else {
        Answer::Failed { status, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_recognised_by_status_or_body() {
        let limited =
            br#"[{"code":"TooManyRequests","message":"Request count limitation exceeded, please try again later."}]"#;
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, None, Vec::new()),
            Answer::RateLimited { wait: None, .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, Some(Duration::from_secs(5)), limited.to_vec()),
            Answer::RateLimited { wait: Some(_), .. }
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, None, b"x".to_vec()),
            Answer::Unauthorized(_)
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, None, Vec::new()),
            Answer::Failed { .. }
        ));
        assert!(matches!(classify(StatusCode::OK, None, b"{}".to_vec()), Answer::Ok(_)));
    }
}
