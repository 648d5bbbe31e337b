//! One connection's outbound queue: encoded frames waiting for the socket, and the
//! switch that ends the session (slow consumer, replaced device, kick, shutdown).
//!
//! An idle connection costs one small allocation here: the queue's storage is taken
//! on the first frame and given back after a burst. Fan-out pushes never wait; a
//! queue over its capacity closes the session as a slow consumer (the client catches
//! up by seq when it returns). The session drains everything queued in one go, so
//! several frames leave in one write.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use courier_protocol::ErrorCode;

/// Storage kept after a burst; a larger queue is given back once drained.
const RETAINED_SLOTS: usize = 16;

/// The sending side, held by the registry (and the session, for its replies).
#[derive(Clone)]
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the session.
pub struct OutboundQueue {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Set once the session is asked to close; the first reason wins.
    closed: Option<ErrorCode>,
    /// The session is gone: nothing is queued any more.
    receiver_gone: bool,
    waker: Option<Waker>,
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the socket.
    Queued,
    /// The queue was full: this push closed the session as a slow consumer.
    SlowConsumer,
    /// The session is closing or gone.
    Closed,
}

/// What the session should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// Frames are queued: drain them.
    Frames,
    /// The session was asked to close, with this code.
    Closed(ErrorCode),
}

impl Outbound {
    /// A queue that holds up to `capacity` fan-out frames.
    pub fn channel(capacity: usize) -> (Self, OutboundQueue) {
        let shared = Arc::new(Shared {
            capacity,
            state: Mutex::new(State::default()),
        });
        (
            Self {
                shared: shared.clone(),
            },
            OutboundQueue { shared },
        )
    }

    /// Queues an encoded frame without waiting. A full queue means the client does not
    /// keep up: the session is closed as a slow consumer.
    pub fn push(&self, frame: Bytes) -> Pushed {
        self.enqueue(frame, true)
    }

    /// Queues the answer to one of the client's own requests. Not held to the
    /// capacity: the number of requests in flight per connection is capped already.
    pub fn reply(&self, frame: Bytes) -> bool {
        self.enqueue(frame, false) == Pushed::Queued
    }

    fn enqueue(&self, frame: Bytes, bounded: bool) -> Pushed {
        let (pushed, waker) = {
            let mut s = self.shared.state.lock().expect("outbound lock");
            if s.receiver_gone || s.closed.is_some() {
                return Pushed::Closed;
            }
            let pushed = if bounded && s.frames.len() >= self.shared.capacity {
                s.closed = Some(ErrorCode::SlowConsumer);
                Pushed::SlowConsumer
            } else {
                s.frames.push_back(frame);
                Pushed::Queued
            };
            (pushed, s.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        pushed
    }

    /// Asks the session to close, telling the client `code`. The first reason wins.
    pub fn close(&self, code: ErrorCode) {
        let waker = {
            let mut s = self.shared.state.lock().expect("outbound lock");
            if s.closed.is_none() {
                s.closed = Some(code);
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Why the session was asked to close, if it was.
    pub fn close_reason(&self) -> Option<ErrorCode> {
        self.shared.state.lock().expect("outbound lock").closed
    }
}

impl OutboundQueue {
    /// Waits until frames are queued or the session is asked to close (closing wins).
    /// Cancel-safe.
    pub async fn ready(&mut self) -> Ready {
        std::future::poll_fn(|cx| self.poll_ready(cx, true)).await
    }

    /// Waits until frames are queued, whether or not the session is closing (to let
    /// the answers to requests in flight out before the end). Cancel-safe.
    pub async fn frames(&mut self) {
        std::future::poll_fn(|cx| self.poll_ready(cx, false)).await;
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>, closing_wins: bool) -> Poll<Ready> {
        let mut s = self.shared.state.lock().expect("outbound lock");
        if let (Some(code), true) = (s.closed, closing_wins) {
            return Poll::Ready(Ready::Closed(code));
        }
        if !s.frames.is_empty() {
            return Poll::Ready(Ready::Frames);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Moves queued frames into `out` until it holds `max_bytes` (at least one frame
    /// when any is queued); returns how many were moved.
    pub fn drain_into(&mut self, out: &mut BytesMut, max_bytes: usize) -> usize {
        let mut s = self.shared.state.lock().expect("outbound lock");
        let mut moved = 0;
        while let Some(frame) = s.frames.front() {
            if moved > 0 && out.len() + frame.len() > max_bytes {
                break;
            }
            out.extend_from_slice(frame);
            s.frames.pop_front();
            moved += 1;
        }
        if s.frames.is_empty() && s.frames.capacity() > RETAINED_SLOTS {
            s.frames = VecDeque::new();
        }
        moved
    }

    /// Takes the one queued frame when exactly one is queued (written without a copy).
    pub fn take_single(&mut self) -> Option<Bytes> {
        let mut s = self.shared.state.lock().expect("outbound lock");
        if s.frames.len() == 1 {
            s.frames.pop_front()
        } else {
            None
        }
    }
}

impl Drop for OutboundQueue {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().expect("outbound lock");
        s.receiver_gone = true;
        s.frames = VecDeque::new();
        s.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(q: &mut OutboundQueue) -> Vec<u8> {
        let mut out = BytesMut::new();
        q.drain_into(&mut out, usize::MAX);
        out.to_vec()
    }

    #[tokio::test]
    async fn frames_come_out_in_order_in_one_drain() {
        let (tx, mut rx) = Outbound::channel(8);
        assert_eq!(tx.push(Bytes::from_static(b"ab")), Pushed::Queued);
        assert!(tx.reply(Bytes::from_static(b"c")));
        assert_eq!(rx.ready().await, Ready::Frames);
        assert_eq!(drained(&mut rx), b"abc");
        assert!(rx.take_single().is_none());
    }

    #[tokio::test]
    async fn a_push_past_capacity_closes_as_slow_consumer() {
        let (tx, mut rx) = Outbound::channel(2);
        assert_eq!(tx.push(Bytes::from_static(b"1")), Pushed::Queued);
        assert_eq!(tx.push(Bytes::from_static(b"2")), Pushed::Queued);
        assert_eq!(tx.push(Bytes::from_static(b"3")), Pushed::SlowConsumer);
        assert_eq!(tx.push(Bytes::from_static(b"4")), Pushed::Closed);
        assert_eq!(rx.ready().await, Ready::Closed(ErrorCode::SlowConsumer));
        // What was queued before still goes out ahead of the Kick.
        assert_eq!(drained(&mut rx), b"12");
        assert!(!tx.reply(Bytes::from_static(b"5")));
    }

    #[tokio::test]
    async fn the_first_close_reason_wins_and_wakes_the_session() {
        let (tx, mut rx) = Outbound::channel(2);
        let waiting = tokio::spawn(async move { rx.ready().await });
        tokio::task::yield_now().await;
        tx.close(ErrorCode::Replaced);
        tx.close(ErrorCode::GoingAway);
        assert_eq!(waiting.await.unwrap(), Ready::Closed(ErrorCode::Replaced));
        assert_eq!(tx.close_reason(), Some(ErrorCode::Replaced));
    }

    #[test]
    fn a_burst_does_not_keep_its_storage() {
        let (tx, mut rx) = Outbound::channel(1000);
        for _ in 0..500 {
            tx.push(Bytes::from_static(b"x"));
        }
        let mut out = BytesMut::new();
        assert_eq!(rx.drain_into(&mut out, 100), 100);
        assert_eq!(rx.drain_into(&mut out, usize::MAX), 400);
        assert!(rx.shared.state.lock().unwrap().frames.capacity() <= RETAINED_SLOTS);
    }

    #[test]
    fn nothing_is_queued_once_the_session_is_gone() {
        let (tx, rx) = Outbound::channel(4);
        drop(rx);
        assert_eq!(tx.push(Bytes::from_static(b"x")), Pushed::Closed);
    }
}
