//! A stuck backend must not block the monitors or the other backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use mesura::backends::{Backend, BackendError, BatchPolicy};
use mesura::daemon::live::{BackendStats, Status};
use mesura::daemon::router;
use mesura::reading::{Kind, Reading, Unit, Value};

struct Counting {
    name: &'static str,
    stuck: bool,
    written: Arc<AtomicUsize>,
}

#[async_trait]
impl Backend for Counting {
    fn name(&self) -> &'static str {
        self.name
    }
    fn policy(&self) -> BatchPolicy {
        BatchPolicy {
            flush_interval: Duration::from_secs(1),
            batch_size: 10,
            queue_capacity: 5,
        }
    }
    async fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError> {
        if self.stuck {
            return Err(BackendError::transient("disk on fire"));
        }
        self.written.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

fn reading(i: usize) -> Reading {
    Reading {
        device: Arc::from("d"),
        device_type: "test",
        metric: Arc::from("m"),
        value: Value::Number(i as f64),
        unit: Unit::Watt,
        kind: Kind::Gauge,
        timestamp: Utc::now(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_backend_fills_its_own_queue_only() {
    let status = Arc::new(Status::default());
    let good_written = Arc::new(AtomicUsize::new(0));
    let backends: Vec<Box<dyn Backend>> = vec![
        Box::new(Counting {
            name: "good",
            stuck: false,
            written: good_written.clone(),
        }),
        Box::new(Counting {
            name: "bad",
            stuck: true,
            written: Arc::new(AtomicUsize::new(0)),
        }),
    ];
    let (router, tasks) = router::start(backends, &status);
    for i in 0..200 {
        // dispatch never waits, whatever the backends do.
        router.dispatch(vec![reading(i)], |_| true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    router.close_all();
    for t in tasks {
        t.await.expect("backend task");
    }
    assert_eq!(
        good_written.load(Ordering::SeqCst),
        200,
        "the good backend got everything"
    );
    let bad = status.backend("bad");
    let dropped = BackendStats::get(&bad.dropped_queue_full) + BackendStats::get(&bad.dropped_rejected);
    // The bad backend holds at most batch_size pending + queue_capacity queued; the rest is counted.
    assert_eq!(dropped, 200, "every reading the bad backend could not take is counted");
    assert!(BackendStats::get(&bad.dropped_queue_full) >= 200 - 15);
    assert!(BackendStats::get(&bad.write_errors) > 0);
}
