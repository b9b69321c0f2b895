//! The artifact: `build.builder.artifacts` copied out of the builder
//! container as the archive the Docker Engine makes of it, streamed
//! straight into [`unpack`], which places it into the runtime build context
//! at `build.builder.artifacts_dest` and treats it as the untrusted input it
//! is, within the job's [`ArtifactLimits`]. Nothing of it is kept on disk
//! but what is placed: no copy of the archive, so a limit met stops the
//! download too.

mod reader;
mod unpack;

pub(super) use unpack::{ArtifactError, Unpacked};

use super::{is_not_found, BuilderError, BuilderRun};
use crate::events::Reporter;
use bollard::query_parameters::DownloadFromContainerOptions;
use bollard::Docker;
use buildbot_protocol::grammar::path::CleanPath;
use buildbot_protocol::StepName;
use bytes::Bytes;
use futures_util::StreamExt;
use reader::ChannelReader;
use std::io;
use tokio::sync::mpsc;
use unpack::ArtifactLimits;

/// Chunks of the download buffered ahead of the unpacker: bounds memory
/// when the disk is slower than the daemon.
const CHANNEL_CHUNKS: usize = 8;

/// The artifact's absolute path in the container, lexically clean:
/// `artifacts` when absolute, else under `workdir`.
fn path_in_container(workdir: &str, artifacts: &str) -> String {
    let joined = if artifacts.starts_with('/') {
        artifacts.to_owned()
    } else {
        format!("{workdir}/{artifacts}")
    };
    // Rooted, so `..` never climbs above `/`.
    CleanPath::new(&format!("/{joined}")).as_str().to_owned()
}

/// Copies the artifact out of `container` into the build context and
/// reports where it went.
pub(super) async fn copy_out(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
    reporter: &Reporter,
) -> Result<Unpacked, BuilderError> {
    let path = path_in_container(&spec.builder.workdir, &spec.builder.artifacts);
    let unpacked = download_and_unpack(docker, spec, container, &path).await?;
    report(spec, &path, &unpacked, reporter).await;
    Ok(unpacked)
}

/// Downloads the artifact's archive and unpacks it as it arrives, on a
/// blocking thread (the tar crate reads synchronously) fed through a
/// bounded channel. A download error wins over what the unpacker made of
/// the cut archive; an unpacking error (a limit met, an unsafe entry)
/// drops the receiver, which ends the download.
async fn download_and_unpack(
    docker: &Docker,
    spec: &BuilderRun<'_>,
    container: &str,
    path: &str,
) -> Result<Unpacked, BuilderError> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let context_dir = spec.context_dir.to_owned();
    let dest = spec.builder.artifacts_dest.clone();
    let limits = ArtifactLimits::from(spec.size_limits);
    let unpacking = tokio::task::spawn_blocking(move || {
        unpack::unpack(ChannelReader::new(rx), &context_dir, &dest, limits)
    });
    let downloaded = download(docker, container, path, tx).await;
    let unpacked = unpacking
        .await
        .map_err(|e| BuilderError::Api(format!("artifact task failed: {e}")))?;
    downloaded?;
    Ok(unpacked?)
}

/// Says where the artifact went, and what of the checkout it replaced.
async fn report(spec: &BuilderRun<'_>, path: &str, unpacked: &Unpacked, reporter: &Reporter) {
    let dest = &spec.builder.artifacts_dest;
    if unpacked.replaced {
        let line = format!("replaced {dest} of the checkout with the artifact");
        reporter.system(StepName::Builder, line).await;
    }
    let line = format!(
        "copied {path} to {dest} in the build context ({} files, {} bytes)",
        unpacked.files, unpacked.bytes
    );
    reporter.system(StepName::Builder, line).await;
}

/// Sends the daemon's archive of `path` in `container` down `to`, until
/// it ends or the unpacker stops listening. On an error the unpacker is
/// told too, so it stops rather than take the cut archive for a whole one.
async fn download(
    docker: &Docker,
    container: &str,
    path: &str,
    to: mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), BuilderError> {
    let options = DownloadFromContainerOptions {
        path: path.to_owned(),
    };
    let mut archive = docker.download_from_container(container, Some(options));
    while let Some(chunk) = archive.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = to.send(Err(io::Error::other("the download failed"))).await;
                return Err(download_error(path, e));
            }
        };
        if to.send(Ok(chunk)).await.is_err() {
            // The unpacker stopped; its error says why.
            return Ok(());
        }
    }
    Ok(())
}

/// The job's error for a failed download.
fn download_error(path: &str, e: bollard::errors::Error) -> BuilderError {
    if is_not_found(&e) {
        return BuilderError::ArtifactMissing {
            path: path.to_owned(),
        };
    }
    BuilderError::Download {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_path_is_absolute_and_clean() {
        assert_eq!(path_in_container("/src", "public"), "/src/public");
        assert_eq!(path_in_container("/src", "./out/../dist/"), "/src/dist");
        assert_eq!(path_in_container("/src", "/out"), "/out");
        assert_eq!(path_in_container("/src/", "."), "/src");
        assert_eq!(
            path_in_container("/work/../src", "/out/./site"),
            "/out/site"
        );
    }
}
