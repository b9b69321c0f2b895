//! The registry's HTTP API (OCI distribution spec), through `oci-client`:
//! read a manifest with its exact bytes, put those bytes under another
//! tag, and ask which digest a tag or image reference resolves to. The
//! push step writes through it; image access checks read through it.

pub(crate) mod transport;

use bollard::auth::DockerCredentials;
use bytes::Bytes;
use http::HeaderValue;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, ParseError, Reference};
use std::future::Future;
use std::time::Duration;
use transport::Scheme;
use zeroize::Zeroize;

/// The manifest kinds a tag can point at: single-platform manifests and
/// lists/indexes, Docker's and OCI's. Asked for in this order.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
];

/// Bounds on one registry request; the job's timeout bounds the step.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Tries of one registry request answered with a server error, and the
/// pause before the next (times the tries so far).
const ATTEMPTS: u32 = 4;
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    /// The HTTP client could not be set up (TLS roots, proxy settings).
    #[error("cannot set up the registry client: {0}")]
    Client(#[source] OciDistributionError),
    /// `repository:tag` is not a reference the client understands.
    #[error("{reference} is not a valid image reference: {source}")]
    Reference {
        reference: String,
        #[source]
        source: ParseError,
    },
    /// Reading a manifest failed.
    #[error("reading the manifest of {reference} failed: {source}")]
    Get {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    /// Putting a manifest under a tag failed.
    #[error("tagging {reference} failed: {source}")]
    Put {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    /// Asking which digest a tag resolves to failed (404 included).
    #[error("resolving {reference} failed: {source}")]
    Resolve {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    /// The manifest is of a kind the worker does not re-tag.
    #[error(
        "the manifest of {reference} has media type {media_type:?}, which the worker does not tag"
    )]
    MediaType {
        reference: String,
        media_type: String,
    },
}

/// A manifest exactly as the registry stored it.
pub(crate) struct Manifest {
    /// The bytes; the digest is of exactly these, so they are put as is.
    bytes: Bytes,
    /// `sha256:…` of the bytes.
    pub(crate) digest: String,
    /// What the bytes are, for the `Content-Type` of a put.
    media_type: &'static str,
}

/// One repository on one registry, with the job's credentials.
pub(crate) struct Registry {
    client: Client,
    auth: RegistryAuth,
    /// The repository without tag, as the job names it.
    repository: String,
}

impl Registry {
    /// A client for `repository` over `scheme`, authenticating with
    /// `credentials` (anonymous without).
    pub(crate) fn new(
        repository: &str,
        scheme: Scheme,
        credentials: Option<&DockerCredentials>,
    ) -> Result<Self, RegistryError> {
        let config = ClientConfig {
            protocol: match scheme {
                Scheme::Http => ClientProtocol::Http,
                Scheme::Https => ClientProtocol::Https,
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("buildbot/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        // `Client::new` would fall back to a default (HTTPS) client on error.
        let client = Client::try_from(config).map_err(RegistryError::Client)?;
        Ok(Self {
            client,
            auth: auth_of(credentials),
            repository: repository.to_owned(),
        })
    }

    /// `repository:tag` as the job names it, for messages.
    pub(crate) fn name(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }

    /// The manifest `tag` points at, its bytes checked against the digest
    /// the registry reports.
    pub(crate) async fn manifest(&self, tag: &str) -> Result<Manifest, RegistryError> {
        let reference = self.reference(tag)?;
        let (bytes, digest) = retrying(|| {
            self.client
                .pull_manifest_raw(&reference, &self.auth, &MANIFEST_MEDIA_TYPES)
        })
        .await
        .map_err(|source| RegistryError::Get {
            reference: self.name(tag),
            source,
        })?;
        let media_type = media_type_of(&bytes).ok_or_else(|| RegistryError::MediaType {
            reference: self.name(tag),
            media_type: declared_media_type(&bytes).unwrap_or_default(),
        })?;
        Ok(Manifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// Puts `manifest`'s bytes under `tag`. Returns the digest the registry
    /// says it stored, when its `Location` names one.
    pub(crate) async fn put(
        &self,
        tag: &str,
        manifest: &Manifest,
    ) -> Result<Option<String>, RegistryError> {
        let reference = self.reference(tag)?;
        // A put takes no credentials: the client uses those it stored.
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        let content_type = HeaderValue::from_static(manifest.media_type);
        let location = retrying(|| {
            self.client
                .push_manifest_raw(&reference, manifest.bytes.clone(), content_type.clone())
        })
        .await
        .map_err(|source| RegistryError::Put {
            reference: self.name(tag),
            source,
        })?;
        Ok(digest_in_location(&location).map(str::to_owned))
    }

    /// The digest `tag` resolves to now.
    pub(crate) async fn digest_of(&self, tag: &str) -> Result<String, RegistryError> {
        let reference = self.reference(tag)?;
        retrying(|| self.client.fetch_manifest_digest(&reference, &self.auth))
            .await
            .map_err(|source| RegistryError::Resolve {
                reference: self.name(tag),
                source,
            })
    }

    /// The digest `image` (`name:tag` or `name@digest`, as a Dockerfile
    /// names it; Docker Hub's short names included) resolves to, asked
    /// with this client's credentials: the registry decides access.
    pub(crate) async fn digest_of_image(&self, image: &str) -> Result<String, RegistryError> {
        let reference: Reference = image.parse().map_err(|source| RegistryError::Reference {
            reference: image.to_owned(),
            source,
        })?;
        retrying(|| self.client.fetch_manifest_digest(&reference, &self.auth))
            .await
            .map_err(|source| RegistryError::Resolve {
                reference: image.to_owned(),
                source,
            })
    }

    fn reference(&self, tag: &str) -> Result<Reference, RegistryError> {
        let name = self.name(tag);
        name.parse().map_err(|source| RegistryError::Reference {
            reference: name,
            source,
        })
    }
}

/// The password (or token) copy lives for every request of the step:
/// zeroed with the client. oci-client's own clones of it, in its auth
/// store, are out of reach.
impl Drop for Registry {
    fn drop(&mut self) {
        match &mut self.auth {
            RegistryAuth::Basic(_, password) => password.zeroize(),
            RegistryAuth::Bearer(token) => token.zeroize(),
            RegistryAuth::Anonymous => {}
        }
    }
}

/// Runs `call` again after a server error (5xx), up to [`ATTEMPTS`] times
/// in all. Registries answer 500 when a read races a write of the same
/// tag (distribution's filesystem storage rewrites a tag's link file in
/// place), which concurrent jobs sharing a tag do; every call here is
/// idempotent.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < ATTEMPTS && is_server_error(&e) => {
                tracing::debug!(error = %e, attempt, "registry server error; trying again");
                tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn is_server_error(e: &OciDistributionError) -> bool {
    matches!(e, OciDistributionError::ServerError { code, .. } if *code >= 500)
}

/// The job's credentials as the registry client takes them. An identity
/// token (an OAuth2 refresh token in Docker's config) is sent as the
/// password of basic auth at the token endpoint, which registries issuing
/// them (e.g. Azure's) accept; the user name defaults to Docker's
/// `<token>` placeholder.
fn auth_of(credentials: Option<&DockerCredentials>) -> RegistryAuth {
    let Some(credentials) = credentials else {
        return RegistryAuth::Anonymous;
    };
    let username = credentials.username.clone();
    match (&credentials.identitytoken, &credentials.password) {
        (Some(token), _) => RegistryAuth::Basic(
            username.unwrap_or_else(|| "<token>".to_owned()),
            token.clone(),
        ),
        (None, Some(password)) => {
            RegistryAuth::Basic(username.unwrap_or_default(), password.clone())
        }
        (None, None) => RegistryAuth::Anonymous,
    }
}

/// What a manifest says it is (`mediaType`), or for an OCI manifest or
/// index without that optional field, what its shape says; None for kinds
/// the worker does not know (e.g. Docker's signed schema 1).
fn media_type_of(bytes: &[u8]) -> Option<&'static str> {
    let shape: ManifestShape = serde_json::from_slice(bytes).ok()?;
    match shape.media_type {
        Some(declared) => MANIFEST_MEDIA_TYPES
            .into_iter()
            .find(|known| *known == declared),
        None if shape.manifests.is_some() => Some(OCI_IMAGE_INDEX_MEDIA_TYPE),
        None => Some(OCI_IMAGE_MEDIA_TYPE),
    }
}

/// The `mediaType` a manifest declares, for the message refusing it.
fn declared_media_type(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<ManifestShape>(bytes)
        .ok()?
        .media_type
}

/// The fields of a manifest that say what kind it is.
#[derive(serde::Deserialize)]
struct ManifestShape {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// The digest in a put's `Location` (`…/manifests/sha256:…`), when the
/// registry names the stored manifest by digest (some name the tag).
fn digest_in_location(location: &str) -> Option<&str> {
    let (_, last) = location.rsplit_once("/manifests/")?;
    let digest = last.split(['?', '#']).next()?;
    digest.starts_with("sha256:").then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_is_the_declared_one_or_the_oci_shape() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}"#;
        assert_eq!(media_type_of(docker), Some(IMAGE_MANIFEST_MEDIA_TYPE));
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(media_type_of(index), Some(OCI_IMAGE_INDEX_MEDIA_TYPE));
        let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(media_type_of(manifest), Some(OCI_IMAGE_MEDIA_TYPE));
    }

    #[test]
    fn unknown_kinds_and_garbage_have_no_media_type() {
        let schema1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert_eq!(media_type_of(schema1), None);
        assert_eq!(
            declared_media_type(schema1).as_deref(),
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
        );
        assert_eq!(media_type_of(b"not json"), None);
    }

    #[test]
    fn location_names_the_stored_digest_or_nothing() {
        let digest = "sha256:".to_owned() + &"a".repeat(64);
        let location = format!("http://127.0.0.1:5000/v2/app/manifests/{digest}");
        assert_eq!(digest_in_location(&location), Some(digest.as_str()));
        assert_eq!(digest_in_location("/v2/app/manifests/latest"), None);
        assert_eq!(digest_in_location("/v2/app/blobs/x"), None);
    }

    fn server_error(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1:5000/v2/app/manifests/latest".into(),
            message: String::new(),
        }
    }

    /// Calls `retrying` with answers taken in turn; returns the outcome
    /// and how many calls were made.
    async fn retried(answers: Vec<Result<(), u16>>) -> (Result<(), OciDistributionError>, usize) {
        let answers = std::sync::Mutex::new(answers.into_iter());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let outcome = retrying(|| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = answers.lock().expect("answers").next().expect("an answer");
            async move { next.map_err(server_error) }
        })
        .await;
        (outcome, calls.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_tried_again_and_others_are_not() {
        let (outcome, calls) = retried(vec![Err(500), Err(503), Ok(())]).await;
        assert!(outcome.is_ok());
        assert_eq!(calls, 3);
        let (outcome, calls) = retried(vec![Err(404)]).await;
        assert!(outcome.is_err());
        assert_eq!(calls, 1);
        let (outcome, calls) = retried(vec![Err(500); 5]).await;
        assert!(matches!(
            outcome,
            Err(OciDistributionError::ServerError { code: 500, .. })
        ));
        assert_eq!(calls, ATTEMPTS as usize);
    }

    #[test]
    fn credentials_map_to_basic_or_anonymous() {
        let basic = DockerCredentials {
            username: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        assert!(matches!(auth_of(Some(&basic)), RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        let token = DockerCredentials {
            identitytoken: Some("t".into()),
            ..Default::default()
        };
        assert!(
            matches!(auth_of(Some(&token)), RegistryAuth::Basic(u, p) if u == "<token>" && p == "t")
        );
        assert!(matches!(auth_of(None), RegistryAuth::Anonymous));
        let empty = DockerCredentials::default();
        assert!(matches!(auth_of(Some(&empty)), RegistryAuth::Anonymous));
    }
}
