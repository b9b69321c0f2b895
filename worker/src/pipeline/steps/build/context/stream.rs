//! A tar written on a blocking thread and streamed as it is produced: in
//! chunks of bounded size, through a bounded channel, so memory stays small
//! whatever the context's size and the daemon's pace.

use super::{ContextError, ContextStats};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// Bytes per chunk of [`stream_tar`](super::stream_tar): large enough to
/// keep per-chunk overhead low, small enough to start the upload early.
const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks buffered between the tar writer and the upload: bounds memory when
/// the daemon reads more slowly than the disk.
const CHANNEL_CHUNKS: usize = 4;

/// Runs `write` on a blocking thread, streaming what it writes.
pub(super) fn stream_from<F>(write: F) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    F: FnOnce(&mut ChunkWriter) -> Result<ContextStats, ContextError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let on_spawn_error = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("build-context".to_owned())
        .spawn(move || produce(write, tx));
    if let Err(e) = spawned {
        // Nothing has been sent yet, so the channel has room for this.
        let _ = on_spawn_error.try_send(Err(e));
    }
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The body of [`stream_from`]'s thread.
fn produce<F>(write: F, tx: mpsc::Sender<io::Result<Bytes>>)
where
    F: FnOnce(&mut ChunkWriter) -> Result<ContextStats, ContextError>,
{
    let mut writer = ChunkWriter {
        tx: tx.clone(),
        buf: BytesMut::with_capacity(CHUNK_SIZE),
    };
    if let Err(e) = write(&mut writer) {
        // Sending fails only when the stream is gone: nobody to tell.
        let _ = tx.blocking_send(Err(io::Error::other(e)));
    }
}

/// Cuts the tar into [`CHUNK_SIZE`] chunks and sends them down the channel.
pub(super) struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_SIZE);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "build context stream dropped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{fixture, spec, tar_bytes, write, MTIME};
    use super::super::{stream_source_tar, stream_tar, write_source_tar, ContextSpec, WalkLimits};
    use super::*;
    use futures_util::StreamExt;
    use std::fs;

    #[tokio::test]
    async fn source_stream_yields_the_same_bytes() {
        let tmp = fixture();
        let mut expected = Vec::new();
        write_source_tar(tmp.path(), MTIME, WalkLimits::default(), &mut expected).unwrap();
        let streamed: Vec<Bytes> =
            stream_source_tar(tmp.path().to_owned(), MTIME, WalkLimits::default())
                .map(|chunk| chunk.unwrap())
                .collect()
                .await;
        assert_eq!(streamed.concat(), expected);
    }

    async fn collect(spec: ContextSpec) -> (Vec<Bytes>, Option<io::Error>) {
        let mut stream = Box::pin(stream_tar(spec));
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(e) => return (chunks, Some(e)),
            }
        }
        (chunks, None)
    }

    #[tokio::test]
    async fn stream_yields_the_same_bytes() {
        let tmp = fixture();
        let spec = spec(tmp.path(), "app", "docker/Dockerfile");
        let (expected, _) = tar_bytes(&spec);
        let (chunks, error) = collect(spec).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test]
    async fn large_file_streams_in_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Dockerfile", "FROM scratch\n", 0o644);
        let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        fs::write(tmp.path().join("big.bin"), &big).unwrap();
        let spec = spec(tmp.path(), ".", "Dockerfile");
        let (expected, stats) = tar_bytes(&spec);
        assert_eq!(stats.bytes, big.len() as u64 + 13);
        let (chunks, error) = collect(spec).await;
        assert!(error.is_none(), "{error:?}");
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= CHUNK_SIZE));
        assert_eq!(chunks.concat(), expected);
    }

    #[tokio::test]
    async fn stream_ends_with_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (chunks, error) = collect(spec(tmp.path(), ".", "Dockerfile")).await;
        assert!(chunks.is_empty());
        let error = error.unwrap();
        assert_eq!(
            error.to_string(),
            "build.dockerfile: Dockerfile not found in the context"
        );
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<ContextError>());
        assert!(matches!(inner, Some(ContextError::NotFound { .. })));
    }
}
