//! Groups a stream's items into batches, so that what an upstream sent in one burst reaches
//! the client in one write (one syscall, one TCP segment) rather than one write per event.
//!
//! Taking what is ready is not enough: hyper's client hands a response body over one chunk
//! at a time, and decodes the next only when its connection task runs again. So before
//! sending a batch, the stream yields to the event loop, and goes on yielding for as long as
//! the upstream side makes progress in between (it wakes the inner stream: a chunk was
//! handed over, though perhaps not yet a whole event). When yielding brings nothing, the
//! batch goes. It takes two polls without progress to know: hyper's server polls a body
//! again at once when it was pending with nothing to write, before the event loop runs.
//!
//! A stream whose yields bring nothing is paced (a model writing tokens as it makes them):
//! it then sends each item as it comes, without yielding, and tries again after
//! [`PACED_BATCHES`] batches.
//!
//! The first item goes alone, at once, and the stream then gives way once: hyper's server
//! writes out what it holds only when the body has nothing more to give, so without the pause
//! the response head and the first event would wait until the whole burst behind them was
//! read and translated (the time to first byte then grew with the burst).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use futures_util::stream::{Fuse, StreamExt};
use futures_util::task::{ArcWake, AtomicWaker, waker_ref};

/// Most items in one batch.
const MAX_BATCH: usize = 64;
/// Polls in a row without progress after which a batch goes.
const IDLE_POLLS: u8 = 2;
/// Most yields for one batch (a huge event arriving in many chunks does not hold back the
/// events before it).
const MAX_YIELDS: u8 = 64;
/// Batches sent without yielding after yielding brought nothing.
const PACED_BATCHES: u8 = 16;

pub struct Batches<S: Stream> {
    inner: Fuse<S>,
    batch: Vec<S::Item>,
    /// Set when the inner stream wakes this task.
    progress: Arc<Progress>,
    /// Polls in a row that found no progress while holding `batch`.
    idle_polls: u8,
    /// Yields while holding `batch`.
    yields: u8,
    /// Batches left to send without yielding first.
    paced_for: u8,
    /// No item was given yet.
    first: bool,
    /// Give way once before the next batch (the first item was just given).
    hold: bool,
}

/// The waker the inner stream is polled with: notes that it was woken, and wakes the task.
#[derive(Default)]
struct Progress {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Progress {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Relaxed);
        arc_self.task.wake();
    }
}

impl<S: Stream + Unpin> Batches<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner: inner.fuse(),
            batch: Vec::new(),
            progress: Arc::default(),
            idle_polls: 0,
            yields: 0,
            paced_for: 0,
            first: true,
            hold: false,
        }
    }

    fn take(&mut self) -> Vec<S::Item> {
        self.idle_polls = 0;
        self.yields = 0;
        self.paced_for = self.paced_for.saturating_sub(1);
        std::mem::take(&mut self.batch)
    }
}

impl<S: Stream + Unpin> Stream for Batches<S>
where
    S::Item: Unpin,
{
    type Item = Vec<S::Item>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if std::mem::take(&mut this.hold) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.progress.task.register(cx.waker());
        let waker = waker_ref(&this.progress);
        let mut inner_cx = Context::from_waker(&waker);
        loop {
            match this.inner.poll_next_unpin(&mut inner_cx) {
                Poll::Ready(Some(item)) => {
                    if this.batch.capacity() == 0 {
                        // A burst is commonly a few to a few dozen items: grow once or twice.
                        this.batch.reserve(16);
                    }
                    this.batch.push(item);
                    if std::mem::take(&mut this.first) {
                        this.hold = true;
                        return Poll::Ready(Some(this.take()));
                    }
                    this.idle_polls = 0;
                    this.progress.woken.store(false, Ordering::Relaxed);
                    if this.batch.len() >= MAX_BATCH {
                        return Poll::Ready(Some(this.take()));
                    }
                }
                Poll::Ready(None) if this.batch.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) => return Poll::Ready(Some(this.take())),
                Poll::Pending if this.batch.is_empty() => return Poll::Pending,
                Poll::Pending if this.paced_for > 0 || this.yields >= MAX_YIELDS => {
                    return Poll::Ready(Some(this.take()));
                }
                Poll::Pending => {
                    // A chunk came in since the last poll: more may be on its way.
                    if this.progress.woken.swap(false, Ordering::Relaxed) {
                        this.idle_polls = 0;
                    } else if this.idle_polls < IDLE_POLLS {
                        this.idle_polls += 1;
                    } else {
                        // Yielding brought nothing: the upstream is pacing its events.
                        let batch = this.take();
                        this.paced_for = PACED_BATCHES;
                        return Poll::Ready(Some(batch));
                    }
                    this.yields += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Hands over its items as hyper's client does a body it has received: each after a
    /// `Pending` whose wake-up comes once the connection task ran. `None` in the script is a
    /// pause: nothing more has arrived yet (a `Pending` without a wake-up).
    struct Handover {
        script: VecDeque<Option<u32>>,
        handed: bool,
    }

    impl Stream for Handover {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            match self.script.front().copied() {
                None => Poll::Ready(None),
                Some(None) => {
                    self.script.pop_front();
                    Poll::Pending
                }
                Some(Some(item)) if self.handed => {
                    self.handed = false;
                    self.script.pop_front();
                    Poll::Ready(Some(item))
                }
                Some(Some(_)) => {
                    self.handed = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    /// The batches, polled again and again (the script stands for when things arrive).
    fn batches(script: Vec<Option<u32>>) -> Vec<Vec<u32>> {
        let inner = Handover {
            script: script.into(),
            handed: false,
        };
        let mut stream = Batches::new(inner);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        for _ in 0..1000 {
            match Pin::new(&mut stream).poll_next(&mut cx) {
                Poll::Ready(Some(batch)) => out.push(batch),
                Poll::Ready(None) => return out,
                Poll::Pending => {}
            }
        }
        panic!("never ended: {out:?}")
    }

    #[test]
    fn the_first_item_goes_at_once_and_the_rest_of_a_burst_as_one_batch() {
        let burst = (1..=20).map(Some).collect();
        assert_eq!(batches(burst), vec![vec![1], (2..=20).collect::<Vec<_>>()]);
    }

    #[test]
    fn the_first_item_goes_alone_and_the_stream_gives_way_before_the_rest() {
        let mut stream = Batches::new(futures_util::stream::iter(1..=5));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = || Pin::new(&mut stream).poll_next(&mut cx);
        assert_eq!(poll(), Poll::Ready(Some(vec![1])));
        // Here the server writes the head and the first item out.
        assert_eq!(poll(), Poll::Pending);
        assert_eq!(poll(), Poll::Ready(Some(vec![2, 3, 4, 5])));
        assert_eq!(poll(), Poll::Ready(None));
    }

    #[test]
    fn paced_items_go_out_one_by_one_and_bursts_batch_again_after_a_while() {
        // A pause outlasts a yield.
        let mut script = vec![Some(1), None, None, None, Some(2), None, None, None];
        script.extend((100..130).map(Some));
        let out = batches(script);
        // 2's yields brought nothing: the next 16 go out alone...
        let mut expected: Vec<Vec<u32>> = vec![vec![1], vec![2]];
        expected.extend((100..116).map(|i| vec![i]));
        // ...then yielding finds the rest of the burst.
        expected.push((116..130).collect());
        assert_eq!(out, expected);
    }

    #[test]
    fn batches_are_bounded() {
        let many = (0..150).map(Some).collect();
        let sizes: Vec<usize> = batches(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 64, 64, 21]);
    }
}
