//! `POST /api/devices/<id>/write`: a write to a device, behind two locks — an API
//! token configured (`api.token`/`api.token_file`) and `allow_writes: true` in the
//! device file. The write itself runs in the device's task (daemon/supervisor.rs),
//! which validates, applies, reads back and audit-logs it. See docs/control.md.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::errors::echo;
use super::server::ClientAddr;
use super::ApiState;
use crate::monitors::control::WriteCommand;
use crate::monitors::WriteError;

/// The body of a write.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    /// The point (a metric name of the device).
    point: String,
    /// The engineering value, in the point's unit.
    value: f64,
}

/// How long the API waits for the device task: a poll in progress (up to its
/// interval plus a grace) and the write's own timeout.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

fn refuse(code: StatusCode, kind: &str, message: String, missing: &[&str]) -> Response {
    let mut body = json!({ "error": message, "reason": kind });
    if !missing.is_empty() {
        body["missing"] = json!(missing);
    }
    (code, Json(body)).into_response()
}

pub(super) async fn write(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    client: Option<Extension<ClientAddr>>,
    body: Bytes,
) -> Response {
    let client = client.map_or_else(
        || "unknown address".to_owned(),
        |Extension(ClientAddr(a))| a.to_string(),
    );
    let Some(device) = state.status.devices().get(id.as_str()).cloned() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "unknown_device",
            format!("no running device `{}`", echo(&id)),
            &[],
        );
    };
    // Both locks are checked before the body, and named when missing.
    let control = state.status.control(&id);
    let file_allows = control.is_some();
    let Some(control) = control.filter(|_| state.token.is_some()) else {
        let missing: Vec<&str> = [(state.token.is_none(), "api.token"), (!file_allows, "allow_writes")]
            .into_iter()
            .filter_map(|(off, lock)| off.then_some(lock))
            .collect();
        let why: Vec<&str> = missing
            .iter()
            .map(|m| match *m {
                "api.token" => "no API token is configured (`api.token` or `api.token_file` in config.yaml)",
                _ => "the device file does not say `allow_writes: true` (modbus and neasmart devices can)",
            })
            .collect();
        tracing::warn!(device = %id, who = %client, r#type = device.device_type, missing = ?missing, "device write refused: writes are off");
        return refuse(
            StatusCode::FORBIDDEN,
            "writes_off",
            format!("writes to `{id}` are off: {}", why.join("; ")),
            &missing,
        );
    };
    let body: WriteBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!(
                    "the body must be JSON {{\"point\": \"<name>\", \"value\": <number>}}: {}",
                    echo(&e.to_string())
                ),
                &[],
            )
        }
    };
    // One token, so its identity is "the API token"; the address tells clients apart.
    let who = format!("api token from {client}");
    let (reply, answer) = oneshot::channel();
    let command = WriteCommand {
        point: body.point.clone(),
        value: body.value,
        who,
        reply,
    };
    if let Err(e) = control.try_send(command) {
        let (code, message) = match e {
            mpsc::error::TrySendError::Full(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the device has writes waiting; try again",
            ),
            mpsc::error::TrySendError::Closed(_) => (StatusCode::SERVICE_UNAVAILABLE, "the device is not running"),
        };
        return refuse(code, "busy", message.into(), &[]);
    }
    let result = match tokio::time::timeout(ANSWER_WAIT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(WriteError::Gone),
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the device task did not answer in time; the write may still be applied".into(),
                &[],
            )
        }
    };
    match result {
        Ok(w) => Json(json!({
            "device": id,
            "point": w.point,
            "requested": body.value,
            "old": w.old,
            "value": w.new,
            "unit": w.unit,
        }))
        .into_response(),
        Err(e) => {
            let code = match &e {
                WriteError::NotWritable(_) => StatusCode::FORBIDDEN,
                WriteError::UnknownPoint { .. } | WriteError::OutOfRange { .. } | WriteError::Invalid { .. } => {
                    StatusCode::BAD_REQUEST
                }
                WriteError::Refused(_) => StatusCode::CONFLICT,
                WriteError::Link(_) => StatusCode::BAD_GATEWAY,
                WriteError::Gone => StatusCode::SERVICE_UNAVAILABLE,
            };
            refuse(code, e.kind(), e.to_string(), &[])
        }
    }
}
