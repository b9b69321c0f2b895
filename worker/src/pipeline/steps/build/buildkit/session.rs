//! The BuildKit session of one build: the worker's side of the Engine's
//! `/session` endpoint. The daemon asks it, over gRPC, for what only the
//! client has: the job's build secrets and its registry credentials.
//!
//! `/session` is an HTTP/1.1 upgrade to h2c on the Engine's socket, after
//! which the daemon is the gRPC client and the worker the server. bollard
//! opens such a session too, but serves only credentials and file
//! exporters, so the worker opens its own (hyper for the upgrade, tonic
//! and bollard-buildkit-proto's generated services for gRPC).

use bollard::auth::DockerCredentials;
use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use buildbot_protocol::Secret;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// The gRPC methods the session serves, announced to the daemon.
const METHODS: [&str; 3] = [
    "/grpc.health.v1.Health/Check",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/moby.filesync.v1.Auth/Credentials",
];

/// Where the Docker Engine listens, for the `/session` upgrade: the same
/// `DOCKER_HOST` bollard connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionAddress {
    /// A Unix socket path (`unix://...`, the default).
    Unix(PathBuf),
    /// A plain-HTTP `host:port` (`tcp://...` without TLS).
    Tcp(String),
}

impl SessionAddress {
    /// The address `docker_host` (the `DOCKER_HOST` value, if set) names,
    /// or why a session cannot be opened there.
    pub(crate) fn parse(docker_host: Option<&str>) -> Result<Self, String> {
        let host = docker_host.unwrap_or("unix:///var/run/docker.sock");
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(SessionAddress::Unix(PathBuf::from(path)));
        }
        if let Some(address) = host.strip_prefix("tcp://") {
            return Ok(SessionAddress::Tcp(
                address.trim_end_matches('/').to_owned(),
            ));
        }
        Err(format!(
            "DOCKER_HOST {host} is neither unix:// nor tcp://, where the worker opens BuildKit sessions"
        ))
    }
}

/// What the session serves: the job's build secrets by id, and its
/// registry credentials by host.
pub(super) struct SessionServices {
    pub(super) secrets: BTreeMap<String, Secret>,
    pub(super) credentials: HashMap<String, DockerCredentials>,
}

/// Why the session could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("cannot reach the Docker Engine for a BuildKit session: {0}")]
    Connect(#[from] io::Error),
    #[error("the Docker Engine refused a BuildKit session: {0}")]
    Http(#[from] hyper::Error),
    #[error("the Docker Engine refused a BuildKit session: HTTP status {0}")]
    Status(http::StatusCode),
    #[error("cannot build the BuildKit session request: {0}")]
    Request(#[from] http::Error),
}

/// An open session; closed when dropped, which ends the build's access to
/// the secrets.
pub(super) struct Session {
    id: String,
    server: JoinHandle<()>,
}

impl Session {
    /// The id the build request names.
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Opens a session at `address` serving `services`, ready before it
/// returns, so a build naming it finds it.
pub(super) async fn open(
    address: &SessionAddress,
    services: SessionServices,
) -> Result<Session, SessionError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let upgraded = match address {
        SessionAddress::Unix(path) => {
            upgrade(tokio::net::UnixStream::connect(path).await?, &id).await?
        }
        SessionAddress::Tcp(address) => {
            upgrade(tokio::net::TcpStream::connect(address).await?, &id).await?
        }
    };
    let server = tokio::spawn(serve(upgraded, services));
    Ok(Session { id, server })
}

/// Asks the daemon to turn `io` into session `id`'s connection.
async fn upgrade<T>(io: T, id: &str) -> Result<Upgraded, SessionError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "BuildKit session connection ended");
        }
    });
    let mut request = http::Request::post("/session")
        .header(http::header::HOST, "docker")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "h2c")
        .header("X-Docker-Expose-Session-Uuid", id)
        .header("X-Docker-Expose-Session-Name", "buildbot")
        .header("X-Docker-Expose-Session-Sharedkey", id);
    for method in METHODS {
        request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(SessionError::Status(response.status()));
    }
    Ok(hyper::upgrade::on(response).await?)
}

/// Serves the session's gRPC services on the upgraded connection until the
/// daemon closes it or the session is dropped.
async fn serve(upgraded: Upgraded, services: SessionServices) {
    let SessionServices {
        secrets,
        credentials,
    } = services;
    let router = tonic::transport::Server::builder()
        .add_service(HealthServer::new(Healthy))
        .add_service(SecretsServer::new(BuildSecrets(Arc::new(secrets))))
        .add_service(AuthServer::new(RegistryLogins(Arc::new(credentials))));
    let connection = SessionConnection(TokioIo::new(upgraded));
    let incoming = futures_util::stream::iter([Ok::<_, io::Error>(connection)]);
    if let Err(e) = router.serve_with_incoming(incoming).await {
        tracing::debug!(error = %e, "BuildKit session server ended");
    }
}

/// The upgraded connection as tonic's server takes it.
struct SessionConnection(TokioIo<Upgraded>);

impl tonic::transport::server::Connected for SessionConnection {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SessionConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The daemon checks the session's health to know it is still there.
struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving.into(),
        }))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

/// `build.secrets`, for `RUN --mount=type=secret`.
struct BuildSecrets(Arc<BTreeMap<String, Secret>>);

#[tonic::async_trait]
impl Secrets for BuildSecrets {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(secret) => Ok(Response::new(GetSecretResponse {
                data: secret.expose().as_bytes().to_vec(),
            })),
            None => Err(Status::not_found(format!(
                "the Dockerfile mounts secret {id:?}, which build.secrets does not have"
            ))),
        }
    }
}

/// The job's registry credentials, for base-image pulls and `cache_from`.
struct RegistryLogins(Arc<HashMap<String, DockerCredentials>>);

impl RegistryLogins {
    /// The login for `host` as BuildKit names it (Docker Hub's API host is
    /// `registry-1.docker.io`); empty for anonymous access.
    fn login(&self, host: &str) -> CredentialsResponse {
        let names: &[&str] = match host {
            "registry-1.docker.io" | "index.docker.io" => {
                &["docker.io", "https://index.docker.io/v1/"]
            }
            _ => &[],
        };
        let found = std::iter::once(host)
            .chain(names.iter().copied())
            .find_map(|name| self.0.get(name));
        let Some(credentials) = found else {
            return CredentialsResponse::default();
        };
        match &credentials.identitytoken {
            Some(token) => CredentialsResponse {
                username: String::new(),
                secret: token.clone(),
            },
            None => CredentialsResponse {
                username: credentials.username.clone().unwrap_or_default(),
                secret: credentials.password.clone().unwrap_or_default(),
            },
        }
    }
}

#[tonic::async_trait]
impl Auth for RegistryLogins {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        Ok(Response::new(self.login(&request.get_ref().host)))
    }

    // Not announced (see METHODS): BuildKit then asks `credentials` and
    // fetches tokens itself.
    async fn fetch_token(
        &self,
        _request: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("fetch_token"))
    }

    async fn get_token_authority(
        &self,
        _request: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("get_token_authority"))
    }

    async fn verify_token_authority(
        &self,
        _request: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("verify_token_authority"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_goes_where_docker_host_points() {
        assert_eq!(
            SessionAddress::parse(None),
            Ok(SessionAddress::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            SessionAddress::parse(Some("unix:///run/user/1000/docker.sock")),
            Ok(SessionAddress::Unix("/run/user/1000/docker.sock".into()))
        );
        assert_eq!(
            SessionAddress::parse(Some("tcp://10.0.0.2:2375")),
            Ok(SessionAddress::Tcp("10.0.0.2:2375".into()))
        );
        let ssh = SessionAddress::parse(Some("ssh://builder@host")).expect_err("ssh");
        assert!(ssh.contains("ssh://builder@host"), "{ssh}");
    }

    #[test]
    fn docker_hub_logins_are_found_under_buildkits_host_name() {
        let hub = DockerCredentials {
            username: Some("me".into()),
            password: Some("pw".into()),
            ..Default::default()
        };
        let logins = RegistryLogins(Arc::new(HashMap::from([("docker.io".to_owned(), hub)])));
        let login = logins.login("registry-1.docker.io");
        assert_eq!(
            (login.username.as_str(), login.secret.as_str()),
            ("me", "pw")
        );
        assert_eq!(logins.login("ghcr.io"), CredentialsResponse::default());
    }
}
