//! Every error of the API is JSON (`{"error": "..."}`), and what it echoes of a
//! request is cut short: a 56 KB parameter comes back as 64 characters and `…`.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::bad_request;

/// The most of one request value an error message repeats.
pub(super) const ECHO_LIMIT: usize = 64;
/// The most of axum's own rejection text (which may quote the query) kept.
const REJECTION_LIMIT: usize = 200;

/// `text` cut to `limit` characters, with `…` when something was cut.
pub(super) fn cut(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A request value as an error message repeats it.
pub(super) fn echo(value: &str) -> String {
    cut(value, ECHO_LIMIT)
}

/// `Query<T>` whose rejection (a duplicated key, a malformed query) is a JSON 400
/// like every other API error, not axum's plain text.
pub(super) struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(bad_request(
                rejection.status(),
                cut(&rejection.body_text(), REJECTION_LIMIT),
            )),
        }
    }
}

/// Any path the API does not have.
pub(super) async fn not_found(uri: Uri) -> Response {
    bad_request(
        StatusCode::NOT_FOUND,
        format!("no such endpoint `{}`", echo(uri.path())),
    )
}

/// A known path asked with a method it does not answer (everything is GET).
pub(super) async fn method_not_allowed() -> Response {
    bad_request(StatusCode::METHOD_NOT_ALLOWED, "only GET is answered".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_cut_on_a_character_boundary() {
        assert_eq!(echo("meter"), "meter");
        let long = "é".repeat(100);
        assert_eq!(echo(&long), format!("{}…", "é".repeat(ECHO_LIMIT)));
        assert_eq!(echo(&"x".repeat(ECHO_LIMIT)), "x".repeat(ECHO_LIMIT));
    }
}
