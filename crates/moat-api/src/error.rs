//! API errors as Docker's: a JSON `{"message": "..."}` body with the status code clients
//! depend on (404 no such container or image, 409 conflict, 400 bad parameter, 500 otherwise).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moat_engine::EngineError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// the named container does not exist
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// the named image does not exist
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// a request parameter or body is invalid
    #[error("{0}")]
    BadParameter(String),
    /// the registry refused the credentials
    #[error("{0}")]
    Unauthorized(String),
    /// the request conflicts with the object's state
    #[error("{0}")]
    Conflict(String),
    /// no such endpoint or object (the message says which)
    #[error("{0}")]
    NotFound(String),
    /// the engine failed
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// the image store failed
    #[error(transparent)]
    Store(#[from] moat_image::StoreError),
    /// a blocking task died
    #[error("internal error: {0}")]
    Task(String),
    /// a system call failed
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
}

impl From<moat_engine::containers::RecordError> for ApiError {
    fn from(e: moat_engine::containers::RecordError) -> Self {
        ApiError::Engine(e.into())
    }
}

impl From<moat_net::NetError> for ApiError {
    fn from(e: moat_net::NetError) -> Self {
        ApiError::Engine(e.into())
    }
}

impl From<moat_image::db::DbError> for ApiError {
    fn from(e: moat_image::db::DbError) -> Self {
        ApiError::Store(e.into())
    }
}

impl ApiError {
    /// The HTTP status Docker answers with.
    pub fn status(&self) -> StatusCode {
        use moat_engine::containers::RecordError as R;
        use moat_image::StoreError as S;
        match self {
            ApiError::NoSuchContainer(_) | ApiError::NoSuchImage(_) | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Engine(e) => match e {
                EngineError::NoImage(_) => StatusCode::NOT_FOUND,
                EngineError::Conflict(_) => StatusCode::CONFLICT,
                EngineError::Flag(_) | EngineError::Spec(_) => StatusCode::BAD_REQUEST,
                EngineError::Records(R::NoSuchContainer(_)) => StatusCode::NOT_FOUND,
                EngineError::Records(R::NameInUse { .. })
                | EngineError::Records(R::Ambiguous(_)) => StatusCode::CONFLICT,
                EngineError::Records(R::BadName(_)) => StatusCode::BAD_REQUEST,
                EngineError::NetFlag(_) => StatusCode::BAD_REQUEST,
                EngineError::Net(moat_net::NetError::Store(n)) => {
                    use moat_net::StoreError as N;
                    match n {
                        N::NoSuchNetwork(_) => StatusCode::NOT_FOUND,
                        N::NameInUse(_) | N::Ambiguous(_) | N::AddressInUse { .. } => {
                            StatusCode::CONFLICT
                        }
                        N::InUse { .. } | N::Predefined(_) => StatusCode::FORBIDDEN,
                        N::Overlap(_)
                        | N::BadName(_)
                        | N::BadGateway { .. }
                        | N::BadAddress { .. }
                        | N::Driver(_)
                        | N::PoolExhausted => StatusCode::BAD_REQUEST,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    }
                }
                EngineError::Net(moat_net::NetError::NotBridge(_)) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Store(S::NoSuchImage(_)) => StatusCode::NOT_FOUND,
            ApiError::Store(S::Reference(_)) => StatusCode::BAD_REQUEST,
            ApiError::Store(S::MultipleTags { .. }) | ApiError::Store(S::Ambiguous(_)) => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            log::error!("{self}");
        }
        (
            status,
            axum::Json(serde_json::json!({ "message": self.to_string() })),
        )
            .into_response()
    }
}

/// Runs blocking engine work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Task(e.to_string()))?
}
