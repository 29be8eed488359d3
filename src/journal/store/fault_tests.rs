//! A store for tests: object_store's in-memory store, with faults on
//! demand. object_store has no fault injection of its own (its
//! `ThrottledStore` only delays), so this wraps `InMemory` and counts puts.
//!
//! - `fail_put(n)`: the n-th put (1-based, counting from the call) fails
//!   with `Error::Generic`, as a put does once object_store's retries ran out;
//! - `echo_put(n)`: the n-th put is written, then answers AlreadyExists, as
//!   a conditional put does when object_store retried it after its first
//!   answer was lost;
//! - `ignore_create_only()`: from now on a create-only put overwrites, as
//!   some S3-compatible stores that ignore `If-None-Match` do;
//! - `gate()`: from now on puts wait for permits on the semaphore returned;
//! - `pause_next_put()`: the next put waits until the test says go, after
//!   telling the test it has arrived (to run something in between).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::{oneshot, Semaphore};

type Fut<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
type Stream<T> = futures_util::stream::BoxStream<'static, Result<T>>;

#[derive(Debug, Default)]
pub(super) struct Faulty {
    pub(super) inner: InMemory,
    puts: AtomicUsize,
    fail_at: Mutex<Option<usize>>,
    echo_at: Mutex<Option<usize>>,
    gate: Mutex<Option<Arc<Semaphore>>>,
    pause: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    overwrites: std::sync::atomic::AtomicBool,
}

/// The test's side of a paused put: it has arrived, and it may go on.
pub(super) struct Paused {
    pub(super) arrived: oneshot::Receiver<()>,
    pub(super) go: oneshot::Sender<()>,
}

impl Faulty {
    pub(super) fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    pub(super) fn fail_put(&self, n: usize) {
        *self.fail_at.lock().unwrap() = Some(self.puts() + n);
    }

    pub(super) fn echo_put(&self, n: usize) {
        *self.echo_at.lock().unwrap() = Some(self.puts() + n);
    }

    pub(super) fn ignore_create_only(&self) {
        self.overwrites.store(true, Ordering::SeqCst);
    }

    pub(super) fn gate(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    pub(super) fn pause_next_put(&self) -> Paused {
        let (arrived_tx, arrived) = oneshot::channel();
        let (go, go_rx) = oneshot::channel();
        *self.pause.lock().unwrap() = Some((arrived_tx, go_rx));
        Paused { arrived, go }
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty(InMemory)")
    }
}

impl ObjectStore for Faulty {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Fut<'c, Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = self.gate.lock().unwrap().clone();
            if let Some(gate) = gate {
                gate.acquire().await.expect("the gate stays open").forget();
            }
            let pause = self.pause.lock().unwrap().take();
            if let Some((arrived, go)) = pause {
                let _ = arrived.send(());
                let _ = go.await;
            }
            if *self.fail_at.lock().unwrap() == Some(n) {
                return Err(object_store::Error::Generic {
                    store: "Faulty",
                    source: "injected failure (retries exhausted)".into(),
                });
            }
            let mut opts = opts;
            if self.overwrites.load(Ordering::SeqCst) {
                opts.mode = object_store::PutMode::Overwrite;
            }
            let put = self.inner.put_opts(location, payload, opts).await?;
            if *self.echo_at.lock().unwrap() == Some(n) {
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "injected: a retry of a put that succeeded".into(),
                });
            }
            Ok(put)
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> Fut<'c, Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> Fut<'c, Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.get_opts(location, options)
    }

    fn delete_stream(&self, locations: Stream<Path>) -> Stream<Path> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> Stream<ObjectMeta> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> Fut<'c, Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'a, 'b, 'd, 'c>(
        &'a self,
        from: &'b Path,
        to: &'d Path,
        options: CopyOptions,
    ) -> Fut<'c, Result<()>>
    where
        'a: 'c,
        'b: 'c,
        'd: 'c,
        Self: 'c,
    {
        self.inner.copy_opts(from, to, options)
    }
}
