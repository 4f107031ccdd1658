//! Answers finished in the same turn of the scheduler leave together.
//!
//! A client with many keep-alive connections (a load balancer, a tool fanning out) sleeps
//! until an answer reaches one of its sockets, and the kernel wakes it for each. When the
//! gateway writes every answer the moment it is ready and the work between two answers is
//! long (a fresh token's signature check takes about 60 µs), the client is back asleep before
//! the next answer, so every answer pays for waking an idle core: an inter-processor
//! interrupt, which on a virtual machine is a hypervisor exit (about 10 µs of the gateway's
//! CPU per answer on the benchmark machine, 9% of its samples with fresh tokens).
//!
//! [`BatchedWrites`] holds the first write after each read for one turn: the task wakes itself
//! and returns `Pending`, which puts it at the back of the run queue, behind the other
//! connections that were ready in the same turn. Their answers are then written back to back,
//! and the client is woken once for all of them. The bytes stay in hyper's (or rustls's) own
//! buffer meanwhile, so nothing is copied, and a lone request waits only for its own task to
//! be polled again.
//!
//! tokio treats a task that wakes itself while it is being polled as a yield, on both
//! runtimes: it goes to the back of its worker's queue, never into the multi-threaded
//! scheduler's "run next" slot, which would defeat the hold.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose first write after each read waits one scheduler turn (see the module doc).
pub struct BatchedWrites<S> {
    inner: S,
    /// A read returned data since the last write.
    read_since_write: bool,
    /// The last write attempt was held: the next one goes out whatever was read meanwhile,
    /// so a peer that keeps sending can never hold our writes back for longer than one turn.
    held: bool,
}

impl<S> BatchedWrites<S> {
    pub fn new(inner: S) -> BatchedWrites<S> {
        BatchedWrites {
            inner,
            read_since_write: false,
            held: false,
        }
    }

    /// Whether to hold this write; if so, the task is already scheduled again.
    fn hold(&mut self, cx: &mut Context<'_>) -> bool {
        if std::mem::take(&mut self.held) || !self.read_since_write {
            self.read_since_write = false;
            return false;
        }
        self.read_since_write = false;
        self.held = true;
        cx.waker().wake_by_ref();
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.read_since_write = true;
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.hold(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.hold(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Counts how often the task was woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        io: BatchedWrites<tokio::io::DuplexStream>,
        peer: tokio::io::DuplexStream,
        wakes: Arc<CountingWaker>,
    }

    impl Harness {
        fn new() -> Harness {
            let (ours, peer) = tokio::io::duplex(1024);
            Harness {
                io: BatchedWrites::new(ours),
                peer,
                wakes: Arc::new(CountingWaker(AtomicUsize::new(0))),
            }
        }

        fn read(&mut self) -> usize {
            let waker = Waker::from(self.wakes.clone());
            let mut cx = Context::from_waker(&waker);
            let mut storage = [0u8; 64];
            let mut buf = ReadBuf::new(&mut storage);
            match Pin::new(&mut self.io).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) => buf.filled().len(),
                other => panic!("read: {other:?}"),
            }
        }

        fn write(&mut self) -> Poll<io::Result<usize>> {
            let waker = Waker::from(self.wakes.clone());
            let mut cx = Context::from_waker(&waker);
            Pin::new(&mut self.io).poll_write(&mut cx, b"answer")
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn the_first_write_after_a_read_waits_one_wake_up() {
        let mut h = Harness::new();
        h.peer.write_all(b"request").await.unwrap();
        assert_eq!(h.read(), 7);
        assert!(h.write().is_pending());
        assert_eq!(h.wakes(), 1, "a held write schedules its task again");
        assert!(matches!(h.write(), Poll::Ready(Ok(6))));
        // Later writes of the same answer go straight out.
        assert!(matches!(h.write(), Poll::Ready(Ok(6))));
        assert_eq!(h.wakes(), 1);
    }

    #[tokio::test]
    async fn a_write_with_no_read_before_it_is_not_held() {
        let mut h = Harness::new();
        assert!(matches!(h.write(), Poll::Ready(Ok(6))));
        assert_eq!(h.wakes(), 0);
    }

    #[tokio::test]
    async fn reads_while_a_write_is_held_do_not_hold_it_again() {
        let mut h = Harness::new();
        h.peer.write_all(b"one").await.unwrap();
        assert_eq!(h.read(), 3);
        assert!(h.write().is_pending());
        h.peer.write_all(b"two").await.unwrap();
        assert_eq!(h.read(), 3);
        assert!(matches!(h.write(), Poll::Ready(Ok(6))));
        // The next read starts a new answer, which is held once again.
        h.peer.write_all(b"three").await.unwrap();
        assert_eq!(h.read(), 5);
        assert!(h.write().is_pending());
    }
}
