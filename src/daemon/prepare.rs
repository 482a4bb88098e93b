//! The open step of a reload of config.yaml: everything the new config needs is
//! opened (changed backends, a new address of the status API) or checked (the
//! database the disk guard and the downsampler will work on) while the old config
//! runs on untouched. Only when all of it succeeded does `app.rs` apply it, as a
//! whole; on any failure what was opened is dropped and nothing changes.

use tokio::net::TcpListener;

use crate::api::{self, ApiError, ApiState};
use crate::backends::sqlite::writable::{self, NotWritable};
use crate::backends::{self, Backend, BackendError};
use crate::config::{BaseConfig, ConfigError};
use crate::daemon::live::SharedStatus;
use crate::daemon::reload::{ApiChange, BaseDiff};

/// Why a reload of config.yaml was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open backend `{name}`: {source}")]
    Backend { name: &'static str, source: BackendError },
    #[error("the disk guard and the downsampler cannot write their database: {0}")]
    Store(#[from] NotWritable),
    #[error("status API: {0}")]
    Api(#[from] ApiError),
    #[error("the check of the database failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A new config.yaml with everything it needs already open.
pub struct Prepared {
    pub base: BaseConfig,
    pub diff: BaseDiff,
    /// Every changed backend, opened; `None` when it is no longer configured.
    pub backends: Vec<(&'static str, Option<Box<dyn Backend>>)>,
    pub api: PreparedApi,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backends: Vec<_> = self.backends.iter().map(|(name, b)| (name, b.is_some())).collect();
        f.debug_struct("Prepared")
            .field("base", &self.base)
            .field("diff", &self.diff)
            .field("backends (name, open)", &backends)
            .field("api", &self.api)
            .finish()
    }
}

/// What becomes of the status API once the reload applies.
#[derive(Debug)]
pub enum PreparedApi {
    Keep,
    Stop,
    /// Serve with this state: on `listener`, bound already when the address is
    /// new, or else on the same address once the old server has stopped.
    Start {
        state: Box<ApiState>,
        listener: Option<TcpListener>,
    },
}

/// Opens and checks what `new` needs beyond `old`. On an error, everything opened
/// so far is dropped (closed) and `old` is untouched.
pub async fn prepare(old: &BaseConfig, new: BaseConfig, status: &SharedStatus) -> Result<Prepared, ReloadError> {
    let diff = BaseDiff::new(old, &new);
    let targets = diff.targets(old, &new);
    let mut opened = Vec::with_capacity(targets.backends.len());
    for name in targets.backends {
        let backend = backends::open(name, &new)
            .await
            .map_err(|source| ReloadError::Backend { name, source })?;
        opened.push((name, backend));
    }
    if let Some(path) = targets.store {
        tokio::task::spawn_blocking(move || writable::check(&path)).await??;
    }
    let api = match targets.api {
        ApiChange::Keep => PreparedApi::Keep,
        ApiChange::Stop => PreparedApi::Stop,
        ApiChange::Restart => PreparedApi::Start {
            state: Box::new(ApiState::new(&new, status.clone())?),
            listener: None,
        },
        ApiChange::Listen(addr) => PreparedApi::Start {
            state: Box::new(ApiState::new(&new, status.clone())?),
            listener: Some(api::bind(addr).await?),
        },
    };
    Ok(Prepared {
        base: new,
        diff,
        backends: opened,
        api,
    })
}
