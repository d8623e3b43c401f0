//! The two halves of a worker's Unix socket, registered with the reactor so that a frame the
//! worker reads costs this process no wake-up.
//!
//! `tokio::net::UnixStream` asks epoll for readable *and* writable events for as long as the
//! socket lives, and a Unix socket reports "writable" every time the peer reads from it: each
//! frame sent to a worker woke the reactor a second time (a context switch, and an
//! inter-processor interrupt on a virtual machine) for nothing. Here the read half is
//! registered for readable events only, and the write half writes without registration,
//! registering a duplicate descriptor for writable events only while a write would block (a
//! large frame filling the socket's buffer), until the frame is flushed.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits a connected socket into its read and write halves (see the module's doc).
pub fn split(stream: tokio::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    let stream = stream.into_std()?; // deregisters it; stays non-blocking
    let reader = stream.try_clone()?;
    Ok((
        ReadHalf(register(reader, Interest::READABLE)?),
        WriteHalf {
            stream,
            blocked: None,
        },
    ))
}

/// Registers `stream` with the reactor for `interest` alone.
///
/// `with_interest` is deprecated because an arbitrary `AsRawFd` may close or change its
/// descriptor behind the reactor's back; a `UnixStream` owns its descriptor, which stays open
/// and the same until the `AsyncFd` owning the stream drops it. (Its replacement,
/// `register_with_interest`, is `unsafe`, which the workspace forbids.)
#[allow(deprecated)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    AsyncFd::with_interest(stream, interest)
}

/// The read half: readable events only.
#[derive(Debug)]
pub struct ReadHalf(AsyncFd<UnixStream>);

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match ready.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

/// The write half: unregistered while writes go through. Dropping it shuts the socket down
/// for writing, which tells the worker to exit.
#[derive(Debug)]
pub struct WriteHalf {
    stream: UnixStream,
    /// A duplicate of the socket registered for writable events, while a frame is blocked.
    blocked: Option<AsyncFd<UnixStream>>,
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match (&self.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return Poll::Ready(result),
            }
            if self.blocked.is_none() {
                // Registering reports the socket writable at once if it has become so since
                // the write above: no wake-up is lost.
                let dup = self.stream.try_clone()?;
                self.blocked = Some(register(dup, Interest::WRITABLE)?);
            }
            if let Some(fd) = &self.blocked {
                ready!(fd.poll_write_ready(cx))?.clear_ready();
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The frame is out: stop listening for writable events until a write blocks again.
        self.blocked = None;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(Shutdown::Write))
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame far larger than the socket's buffer goes through whole, however the writes
    /// block, and the end of the writer is the end of the reader's stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_writes_block_and_resume() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut reader, _) = split(b).unwrap();
        let (_, mut writer) = split(a).unwrap();
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let sent = data.clone();
        let send = tokio::spawn(async move {
            for chunk in sent.chunks(3 << 20) {
                writer.write_all(chunk).await.unwrap();
                writer.flush().await.unwrap();
            }
        });
        let mut got = Vec::new();
        // A lost wake-up would hang here: fail instead.
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            reader.read_to_end(&mut got),
        )
        .await
        .expect("the transfer stalled")
        .unwrap();
        send.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes arrived changed");
    }
}
