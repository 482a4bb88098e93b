//! `GET /assets/<name>`: the page's chart library (uPlot 1.6.32, MIT, vendored in
//! `assets/` with its licence and `SOURCES.md`), embedded in the binary so the page
//! asks nothing of the internet. Each answer carries an `ETag` (the version and the
//! file's length) and may be cached for a day; `If-None-Match` gets 304.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The vendored uPlot's version, part of every ETag.
const UPLOT_VERSION: &str = "1.6.32";

/// Name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
    (
        "uPlot-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("assets/LICENSE"),
    ),
];

fn etag(name: &str, body: &[u8]) -> String {
    format!("\"{name}-{UPLOT_VERSION}-{}\"", body.len())
}

pub(super) async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some((name, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return super::bad_request(
            StatusCode::NOT_FOUND,
            format!("no asset `{}`", super::errors::echo(&name)),
        );
    };
    let tag = etag(name, body);
    let cache = [
        (
            header::ETAG,
            HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        *body,
    )
        .into_response()
}
