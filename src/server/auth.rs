//! Who is calling the server, on every route that needs to know: a bearer token with
//! `auth = "token"` (the web UI's cookie holding one counts on the UI's routes only, which
//! check the origin of every form — never on the API, where another site's page could send it),
//! or a trusted reverse proxy's `X-Forwarded-User` / `X-Forwarded-Groups` with
//! `auth = "proxy"` — believed only when the connection comes from an address in
//! `server.trusted_proxies`, each header sent once, read as UTF-8. An API write from another
//! site's page (an `Origin` that is not this server) is refused whatever it carries. Also the
//! JSON error answer every API failure uses, and the extractors that turn bad bodies and
//! queries into it.

use super::ServerState;
use crate::app::access::{self, Principal};
use crate::app::{AppError, ErrorKind};
use crate::config::AuthMode;
use crate::domain::echo;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The web UI's cookie: the token, HttpOnly and SameSite=Strict.
pub const SESSION_COOKIE: &str = "hypod_token";
/// The largest JSON request body, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The JSON body of every API error: a stable `code` and a message for people.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One of invalid_input, configuration, internal, not_found, conflict, unauthenticated,
    /// forbidden, too_large.
    pub code: &'static str,
    pub message: String,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(err.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: err.kind.code(),
            message: err.message,
        }
    }
}

impl ApiError {
    pub fn input(message: impl Into<String>) -> ApiError {
        AppError::input(message).into()
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: format!("the request body is larger than {limit} bytes"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut response = (
            self.status,
            Json(ErrorBody {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hypod\""),
            );
        }
        response
    }
}

/// The caller, identified; a route that takes it answers 401 without credentials.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<ServerState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ServerState>,
    ) -> Result<Caller, ApiError> {
        identify(parts, state, Surface::Api)
            .await
            .map(Caller)
            .map_err(Into::into)
    }
}

/// `/mcp`: the caller identified as on the API (a bearer token or the trusted proxy's headers,
/// never the UI's cookie; a write from another site's page refused), put in the request for
/// the MCP tools; anything else answered with the API's JSON error (401 with its
/// `WWW-Authenticate`, 403).
pub async fn mcp_caller(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match identify(&parts, &state, Surface::Api).await {
        Ok(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// Which routes a request is for: the credentials each accepts differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/api/v1`: a bearer token (or the trusted proxy's headers) only. A browser attaches the
    /// UI's cookie to any request to this host, also one another site's page makes (a
    /// `text/plain` POST needs no preflight), so the cookie is not a credential here.
    Api,
    /// `/ui`: the bearer token or the session cookie; the UI's forms check their origin.
    Ui,
}

/// Resolves the caller of a request on `surface`, or says why not.
pub async fn identify(
    parts: &Parts,
    state: &ServerState,
    surface: Surface,
) -> Result<Principal, AppError> {
    let principal = credentials(parts, state, surface).await?;
    if surface == Surface::Api {
        refuse_cross_site_write(parts)?;
    }
    Ok(principal)
}

/// The principal the request's credentials name, among those `surface` accepts.
async fn credentials(
    parts: &Parts,
    state: &ServerState,
    surface: Surface,
) -> Result<Principal, AppError> {
    let config = state.app.config();
    match config.server.auth {
        AuthMode::Token => {
            let secret = match surface {
                Surface::Api => bearer(parts),
                Surface::Ui => bearer(parts).or_else(|| cookie(parts, SESSION_COOKIE)),
            };
            let Some(secret) = secret else {
                let also = if surface == Surface::Api && cookie(parts, SESSION_COOKIE).is_some() {
                    " (the web UI's sign-in cookie counts on /ui pages only, not on the API)"
                } else {
                    ""
                };
                return Err(AppError::new(
                    ErrorKind::Unauthenticated,
                    format!("send `Authorization: Bearer <token>` (an admin creates one with `hypod token create`){also}"),
                ));
            };
            state.app.principal_for_token(&secret).await
        }
        AuthMode::Proxy => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let trusted = peer.is_some_and(|ip| {
                config
                    .server
                    .trusted_proxies
                    .iter()
                    .any(|p| p.parse::<std::net::IpAddr>().ok() == Some(ip))
            });
            if !trusted {
                return Err(AppError::new(
                    ErrorKind::Unauthenticated,
                    "this server believes identity headers only from its trusted proxies; connect through one",
                ));
            }
            let user = proxy_header(parts, "X-Forwarded-User")?.ok_or_else(|| {
                AppError::new(
                    ErrorKind::Unauthenticated,
                    "the proxy sent no X-Forwarded-User",
                )
            })?;
            let groups = proxy_header(parts, "X-Forwarded-Groups")?.unwrap_or_default();
            access::principal_from_proxy(&config.server.proxy_groups, &user, &groups)
        }
    }
}

/// Refuses an API write sent by a web page of another origin. Behind an authenticating proxy
/// the browser's session with the proxy is a credential too, which any page could spend; the
/// API answers no CORS preflight, so no page of another origin has a legitimate write to make.
/// Programs (curl, scripts) send no `Origin`; reads are left alone (a page cannot read the
/// answer without CORS).
fn refuse_cross_site_write(parts: &Parts) -> Result<(), AppError> {
    use axum::http::Method;
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("\u{fffd}"))
    };
    // HTTP/2 names the host in the request's authority, not in a Host header.
    let host = text(header::HOST)
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let foreign_origin = text(header::ORIGIN).is_some_and(|origin| {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        host.is_empty() || authority != Some(host)
    });
    let foreign_fetch = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| matches!(v.as_bytes(), b"cross-site" | b"same-site"));
    if foreign_origin || foreign_fetch {
        return Err(AppError::new(
            ErrorKind::Forbidden,
            "the API takes no writes from another site's web pages; people use the web UI under /ui, programs send no Origin",
        ));
    }
    Ok(())
}

/// An identity header from the trusted proxy: absent, or sent exactly once as UTF-8 text.
/// Two copies are refused (which one the proxy set and which one the client smuggled past it
/// cannot be told apart), and so are bytes that are not UTF-8 — hypod reads these headers as
/// UTF-8, the encoding it documents for proxies, and never guesses another.
fn proxy_header(parts: &Parts, name: &'static str) -> Result<Option<String>, AppError> {
    let refused = |why: String| AppError::new(ErrorKind::Unauthenticated, why);
    let mut values = parts.headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(refused(format!(
            "the request carries {name} more than once; the proxy must set it exactly once (replacing any the client sent)"
        )));
    }
    match std::str::from_utf8(value.as_bytes()) {
        Ok(text) => Ok(Some(text.to_string())),
        Err(e) => Err(refused(format!(
            "{name} is not UTF-8 (invalid byte at {}: {}); hypod reads identity headers as UTF-8 text, so configure the proxy to send them so",
            e.valid_up_to(),
            echo(&String::from_utf8_lossy(value.as_bytes()))
        ))),
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The value of cookie `name`, if sent.
pub fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A JSON request body: size-limited (by the router's body limit), strictly parsed (unknown
/// fields are refused by the types), errors as [`ErrorBody`] naming the field.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if !json {
            return Err(ApiError::input(
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(BODY_LIMIT)
                } else {
                    ApiError::input(format!("cannot read the request body: {e}"))
                }
            })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            ApiError::input(if path == "." {
                format!("request body: {}", e.inner())
            } else {
                format!("request body, field `{path}`: {}", e.inner())
            })
        })?;
        deserializer
            .end()
            .map_err(|e| ApiError::input(format!("request body: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// Query parameters, strictly parsed, errors as [`ErrorBody`].
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryParams<T>, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_from(query)
            .map(QueryParams)
            .map_err(|e| ApiError::input(format!("query: {e}")))
    }
}

fn serde_urlencoded_from<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?,
    )
    .map(|q| q.0)
    .map_err(|e| e.body_text())
}

/// Extractors that identify the caller and check one permission before anything else of the
/// request is read (a body is never parsed for a caller who may not send it).
macro_rules! caller_with {
    ($($name:ident => $permission:ident),* $(,)?) => {$(
        #[doc = concat!("A caller allowed [`Permission::", stringify!($permission), "`].")]
        pub struct $name(pub Principal);

        impl FromRequestParts<Arc<ServerState>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &Arc<ServerState>,
            ) -> Result<$name, ApiError> {
                let principal = identify(parts, state, Surface::Api).await?;
                principal.require(access::Permission::$permission)?;
                Ok($name(principal))
            }
        }
    )*};
}

caller_with!(
    Reader => Read,
    Reviewer => Review,
    Exporter => Export,
    Auditor => Audit,
    Runner => TriggerRun,
    Importer => Import,
);
