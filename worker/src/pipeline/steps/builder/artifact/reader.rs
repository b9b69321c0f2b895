//! The bridge from the async download to the synchronous tar reader: the
//! download task sends chunks down a bounded channel, the unpacker's
//! blocking thread reads them as a byte stream.

use bytes::{Buf, Bytes};
use std::io::{self, Read};
use tokio::sync::mpsc;

/// Reads the chunks sent down a channel, in order; the end of the stream
/// is the sender dropped, an error is the one sent. Blocks: use only on a
/// blocking thread.
pub(super) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// What is left of the chunk being read.
    chunk: Bytes,
}

impl ChannelReader {
    pub(super) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_chunks_in_order_then_ends() {
        let (tx, rx) = mpsc::channel(4);
        for chunk in ["ab", "", "cde"] {
            tx.try_send(Ok(Bytes::from(chunk))).unwrap();
        }
        drop(tx);
        let mut read = String::new();
        ChannelReader::new(rx).read_to_string(&mut read).unwrap();
        assert_eq!(read, "abcde");
    }

    #[test]
    fn an_error_sent_is_the_error_read() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from("ab"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        let mut reader = ChannelReader::new(rx);
        let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "cut");
    }
}
